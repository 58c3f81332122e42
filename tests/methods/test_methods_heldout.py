"""The held-out protocol on the defender's data path (docs/protocol.md): no method, and
no method wrapped in +meta or +retain, receives an evaluation prompt or an evaluation benign prompt,
nor the attacker's prompts. Every method in the registry (a third party's included) runs on the tiny
model while a DataSpy records every text the tokenizer encodes and every prompt the toy world draws."""

import dataclasses

import pytest

from relearnbench.concepts import normalise
from relearnbench.registry import METHODS
from relearnbench.testing import DataSpy, tiny_concept, tiny_model

# checkpoint reads no text at all, only the file the user names (tests/methods/test_checkpoint.py)
BASES = [n for n in METHODS.list() if getattr(METHODS.get(n), "needs_model", True) and n != "checkpoint"]
WRAPPED = [f"{n}+{s}" for n in BASES if not n.endswith("-3") for s in ("meta", "retain")]


def seen_by(name, build, ctx, monkeypatch, concept, tmp_path):
    from safetensors.torch import save_file

    # a method that reads a file the user names (``checkpoint``) gets the tiny model's own UNet
    file = tmp_path / "unet.safetensors"
    save_file(tiny_model().unet.state_dict(), str(file))
    base = METHODS.get(name.split("+")[0])  # a wrapper is built around its base (config.build)
    paths = {base.config_name: {"path": str(file)}} if "path" in getattr(base.Config, "__dataclass_fields__", {}) else {}
    model = tiny_model()
    spy = DataSpy(monkeypatch, model.tokenizer)
    build(name, **paths).unlearn(model, concept, ctx)
    return spy.seen()


@pytest.mark.parametrize("name", BASES + WRAPPED)
def test_a_method_sees_its_train_prompts_only(name, build, ctx, monkeypatch, tmp_path):
    """Everything a method encodes or draws is a train prompt, the concept's anchor or "" (the
    unconditional text): no eval prompt, no eval benign prompt, none of the attacker's."""
    concept = tiny_concept()
    roles = {role: {normalise(t) for t in texts} for role, texts in concept.roles().items()}
    seen = seen_by(name, build, ctx, monkeypatch, concept, tmp_path)
    assert not seen & roles["eval"], f"{name} received evaluation prompts {sorted(seen & roles['eval'])}"
    assert not seen - roles["train"] - {normalise(concept.anchor), ""}, f"{name} received {sorted(seen)}"


def test_the_spy_catches_a_method_trained_on_eval_prompts(build, ctx, monkeypatch, tmp_path):
    concept = tiny_concept()
    leaky = dataclasses.replace(concept, train=tuple(concept.forget_texts))
    assert seen_by("esd", build, ctx, monkeypatch, leaky, tmp_path) & {normalise(t) for t in concept.forget_texts}
