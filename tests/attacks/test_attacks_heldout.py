"""The held-out protocol on the attacker's data path (docs/protocol.md): no attack
receives an evaluation benign prompt, or the defender's prompts, and none trains on images of an
evaluation prompt. A prompt attack that rewrites the evaluation prompts (``reads_eval_prompts``,
UnlearnDiffAtk as published) may encode their text, and only that. Every attack in the registry runs
on the tiny model while a DataSpy records every text tokenized and every prompt the toy world draws."""

import dataclasses

import pytest

from relearnbench.concepts import normalise
from relearnbench.registry import ATTACKS
from relearnbench.testing import TINY_MODELS, DataSpy


def spied(name, concept, build, make_ctx, judge, monkeypatch, arch="tiny"):
    model = TINY_MODELS[arch]()
    spy = DataSpy(monkeypatch, model.tokenizer)

    def evaluate(step=None, forget_prompts=None, final=True, images=None):
        """The harness's evaluation samples the eval prompts; that is not the attack's data."""

    build(name).run(model, concept, make_ctx(judge(2.0)), evaluate)
    return spy


@pytest.mark.parametrize("arch", TINY_MODELS)
@pytest.mark.parametrize("name", ATTACKS.list())
def test_no_attack_trains_on_an_eval_prompt(name, arch, concept, build, make_ctx, judge, monkeypatch):
    forget, benign = {normalise(t) for t in concept.forget_texts}, {normalise(t) for t in concept.benign}
    train, attack = ({normalise(t) for t in concept.roles()[r]} for r in ("train", "attack"))
    spy = spied(name, concept, build, make_ctx, judge, monkeypatch, arch)
    texts, drawn = {normalise(t) for t in spy.texts}, {normalise(t) for t in spy.rendered}
    allowed = forget if ATTACKS.get(name).reads_eval_prompts else set()
    assert not (texts - allowed) & (forget | benign), f"{name} encoded eval prompts {sorted(texts & (forget | benign))}"
    assert not drawn & (forget | benign), f"{name} trained on images of eval prompts {sorted(drawn & (forget | benign))}"
    assert not (texts | drawn) & train, f"{name} received the defender's prompts"
    if name not in ("none", "dummy", "noising"):  # noising takes no data: it perturbs the evaluation's own sampling
        assert (texts | drawn) & attack, f"the spy saw none of {name}'s attack data: is it recording?"


def test_the_spy_catches_an_attack_trained_on_eval_prompts(concept, build, make_ctx, judge, monkeypatch):
    leaky = dataclasses.replace(concept, attack=tuple(concept.forget_texts))
    spy = spied("ft", leaky, build, make_ctx, judge, monkeypatch)
    assert set(spy.rendered) & set(concept.forget_texts)
