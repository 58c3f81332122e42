"""Every registered attack (but the lead's torch-free dummy) runs on a tiny model and follows the
evaluate() protocol: curve attacks evaluate once per configured step, in order; prompt attacks
evaluate once with one prompt per forget prompt that keeps its seed and guidance; probes hand over
images, as many per prompt as the sampler makes, for the prompts they name."""

import dataclasses

import pytest
import torch

from relearnbench.registry import ATTACKS
from relearnbench.testing import TINY_MODELS, tiny_model

NAMES = [n for n in ATTACKS.list() if n != "dummy"]


@pytest.mark.parametrize("arch", TINY_MODELS)  # every attack on SD-1.x and SDXL alike, no per-model branch
@pytest.mark.parametrize("name", NAMES)
def test_attack_runs_and_follows_the_evaluate_protocol(name, arch, concept, build, make_ctx, recorder):
    attack = build(name)
    model = TINY_MODELS[arch]()
    rec = recorder()
    attack.run(model, concept, make_ctx(), rec)

    assert rec.calls, f"{name} never called evaluate()"
    assert rec.finals[-1] and not any(rec.finals[:-1])  # only the last point scores every metric
    curve = getattr(attack.config, "curve", None)
    if curve is not None:  # a finetuning attack or a probe: one record per configured step, step 0 first
        assert [s for s, _ in rec.calls] == sorted(set(curve))
        if rec.images[0] is None:  # finetuning: the concept's own prompts
            assert all(p is None and i is None for (_, p), i in zip(rec.calls, rec.images))
        for (_, prompts), images in zip(rec.calls, rec.images):
            if images is not None:  # a probe: images for its prompts (the forget prompts unless it names others)
                per_prompt = make_ctx().sample_config.images_per_prompt
                assert images.shape == (len(prompts or concept.forget) * per_prompt, 3, 16, 16)
                assert 0 <= images.min() and images.max() <= 1
    elif any(p is not None for _, p in rec.calls):  # a prompt attack
        (step, prompts), = rec.calls
        assert step is None and len(prompts) == len(concept.forget)
        for new, old in zip(prompts, concept.forget):
            assert new.guidance == old.guidance
            if old.seed is not None:
                assert new.seed == old.seed
    for p in model.unet.parameters():  # the model is handed back frozen
        assert not p.requires_grad


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", ["toy", "sd14", "sd21", "sdxl"])
def test_presets_resolve(name, scale):
    from relearnbench.config import instantiate

    cls = ATTACKS.get(name)
    attack = instantiate(cls, scale, {})
    if dataclasses.is_dataclass(attack.config) and hasattr(attack.config, "curve"):
        assert list(attack.config.curve) == sorted(set(attack.config.curve)) and attack.config.curve[0] == 0


def test_none_reuses_the_pre_attack_scores(concept, build, make_ctx, recorder):
    rec = recorder()
    build("none").run(tiny_model(), concept, make_ctx(), rec)
    assert rec.calls == [(0, None)]


def test_same_seed_same_curve_model(concept, build, make_ctx, recorder):
    """Seeded from ctx.seed: two runs give bit-identical finetuned weights, another seed does not."""
    states = []
    for seed in (0, 0, 1):
        model = tiny_model()
        build("ft").run(model, concept, make_ctx(seed=seed), recorder())
        states.append(torch.cat([p.flatten() for p in model.unet.parameters()]))
    assert torch.equal(states[0], states[1])
    assert not torch.equal(states[0], states[2])
