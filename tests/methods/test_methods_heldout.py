"""The held-out protocol on the defender's data path (docs/protocol.md): no method, and
no method wrapped in +meta or +retain, receives an evaluation prompt or an evaluation benign prompt,
nor the attacker's prompts. Every method in the registry (a third party's included) runs on the tiny
model while a DataSpy records every text the tokenizer encodes and every prompt the toy world draws."""

import dataclasses
import pathlib
import tomllib

import pytest

from relearnbench.concepts import normalise
from relearnbench.registry import METHODS
from relearnbench.testing import TINY_MODELS, DataSpy, tiny_concept

# the shipped third-party example (tests/plugin_example): its methods are spied on whether or not it is installed
EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "plugin_example"
EXAMPLE_METHODS = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]["entry-points"]["relearnbench.methods"]
# checkpoint reads no text at all, only the file the user names (tests/methods/test_checkpoint.py)
BASES = [n for n in METHODS.list() if n not in EXAMPLE_METHODS
         and getattr(METHODS.get(n), "needs_model", True) and n != "checkpoint"] + sorted(EXAMPLE_METHODS)
WRAPPED = [f"{n}+{s}" for n in BASES if not n.endswith("-3") for s in ("meta", "retain")]


def seen_by(name, build, ctx, monkeypatch, concept, tmp_path, arch="tiny"):
    from safetensors.torch import save_file

    # a method that reads a file the user names (``checkpoint``) gets the tiny model's own UNet
    file = tmp_path / "unet.safetensors"
    save_file(TINY_MODELS[arch]().unet.state_dict(), str(file))
    base = METHODS.get(name.split("+")[0])  # a wrapper is built around its base (config.build)
    paths = {base.config_name: {"path": str(file)}} if "path" in getattr(base.Config, "__dataclass_fields__", {}) else {}
    model = TINY_MODELS[arch]()
    spy = DataSpy(monkeypatch, model.tokenizer)
    build(name, **paths).unlearn(model, concept, ctx)
    return spy.seen()


@pytest.fixture
def example_registered(monkeypatch):
    """The example package's methods in the registry for one test, as its entry points register them
    when it is installed (nothing to do then), and removed afterwards."""
    from relearnbench.registry import Entry

    monkeypatch.syspath_prepend(str(EXAMPLE))
    for name, target in EXAMPLE_METHODS.items():
        if name not in METHODS.names():
            monkeypatch.setitem(METHODS._entries, name, Entry(name, target, "", {"source": "relearnbench-example"}))


@pytest.mark.parametrize("arch", TINY_MODELS)  # SD-1.x and SDXL alike (SDXL: both tokenizers, one class)
@pytest.mark.parametrize("name", BASES + WRAPPED)
def test_a_method_sees_its_train_prompts_only(name, arch, build, ctx, monkeypatch, tmp_path, example_registered):
    """Everything a method encodes or draws is a train prompt, the concept's anchor or "" (the
    unconditional text): no eval prompt, no eval benign prompt, none of the attacker's; and the spy saw
    the method's train prompts (a method whose data bypassed the tokenizer would show nothing)."""
    concept = tiny_concept()
    roles = {role: {normalise(t) for t in texts} for role, texts in concept.roles().items()}
    seen = seen_by(name, build, ctx, monkeypatch, concept, tmp_path, arch)
    assert not seen & roles["eval"], f"{name} received evaluation prompts {sorted(seen & roles['eval'])}"
    assert not seen - roles["train"] - {normalise(concept.anchor), ""}, f"{name} received {sorted(seen)}"
    if name != "none":  # the one method that reads no data
        assert seen & roles["train"], f"the spy saw none of {name}'s train prompts: is it recording? {sorted(seen)}"


def test_the_spy_catches_a_method_trained_on_eval_prompts(build, ctx, monkeypatch, tmp_path):
    concept = tiny_concept()
    leaky = dataclasses.replace(concept, train=tuple(concept.forget_texts))
    assert seen_by("esd", build, ctx, monkeypatch, leaky, tmp_path) & {normalise(t) for t in concept.forget_texts}
