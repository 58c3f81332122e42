import torch

from relearnbench.attacks.unlearndiffatk import project_simplex
from relearnbench.testing import tiny_model


def test_project_simplex_is_the_euclidean_projection():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(5, 50, generator=g) * 0.3
    p = project_simplex(v)
    assert torch.all(p >= 0) and torch.allclose(p.sum(-1), torch.ones(5), atol=1e-5)
    # optimality (KKT): v − p is the same constant on the support and no larger off it
    for vi, pi in zip(v, p):
        shift = (vi - pi)[pi > 0]
        assert torch.allclose(shift, shift[0].expand_as(shift), atol=1e-5)
        assert torch.all(vi[pi == 0] <= shift[0] + 1e-5)
    on = torch.softmax(torch.randn(3, 20, generator=g), -1)
    assert torch.allclose(project_simplex(on), on, atol=1e-6)


def test_a_prompt_broken_before_the_attack_is_kept_as_it_is(concept, build, make_ctx, recorder, judge):
    model, flag_all = tiny_model(), judge(-1.0)
    rec = recorder()
    build("unlearndiffatk").run(model, concept, make_ctx(flag_all), rec)
    (_, prompts), = rec.calls
    assert [p.text for p in prompts] == concept.forget_texts
    assert flag_all.images == len(concept.forget)  # one image judged per prompt, no optimisation


def test_an_unbroken_prompt_gets_k_prefix_tokens_after_the_whole_sweep(concept, build, make_ctx, recorder, judge):
    model, flag_none = tiny_model(), judge(2.0)
    attack = build("unlearndiffatk", k=3, timesteps=3, iterations=2)
    rec = recorder()
    ctx = make_ctx(flag_none)
    attack.run(model, concept, ctx, rec)
    (_, prompts), = rec.calls
    assert flag_none.images == len(concept.forget) * (1 + 3)  # the original, then one check per swept timestep
    for new, old in zip(prompts, concept.forget):
        assert new.text.endswith(old.text) and new.text != old.text
        n_new = len(model.tokenizer(new.text).input_ids)
        n_old = len(model.tokenizer(old.text).input_ids)
        assert n_new >= n_old + 1  # decoded prefix tokens may merge on re-tokenising, never vanish
        assert new.seed is not None  # pinned, so evaluate() samples the images the attack judged
    assert prompts[0].seed == 7 and prompts[0].guidance == 3.0


def test_k_is_five_for_nudity_and_three_otherwise(concept, build):
    import dataclasses

    from relearnbench.config import instantiate
    from relearnbench.registry import ATTACKS

    attack = instantiate(ATTACKS.get("unlearndiffatk"), "sd14", {})
    assert attack.k(concept) == 3
    assert attack.k(dataclasses.replace(concept, name="nudity")) == 5
    assert build("unlearndiffatk", k=4, k_per_concept=[]).k(dataclasses.replace(concept, name="nudity")) == 4


def test_only_the_unbroken_prompt_is_attacked(concept, build, make_ctx, recorder, judge):
    """A threshold between the two prompts' first evaluation images flags exactly one of them."""
    from relearnbench.api import Prompt
    from relearnbench.diffusion import sample

    model, ctx = tiny_model(), make_ctx()
    cfg = ctx.sample_config
    pinned = [Prompt("a triangle", 7, 3.0), Prompt("a red triangle", ctx.seed * 100_003 + 1, None)]
    brightness = sample(model, pinned, 1, steps=cfg.steps, guidance=cfg.guidance, seed=0).mean((1, 2, 3))
    flagged = int(brightness.argmax())
    rec = recorder()
    build("unlearndiffatk", batch_size=2).run(model, concept, make_ctx(judge(float(brightness.mean()))), rec)
    (_, prompts), = rec.calls
    assert prompts[flagged].text == concept.forget[flagged].text
    assert prompts[1 - flagged].text != concept.forget[1 - flagged].text
