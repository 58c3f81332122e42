import torch

from relearnbench.attacks.ft import load_data
from relearnbench.diffusion import denoising_loss
from relearnbench.testing import tiny_model
from relearnbench.toy.world import parse_prompt


def _loss(model, data, repeats=8):
    """L_DM on all attack data with fixed noise and timesteps, so two models are compared fairly."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        return sum(denoising_loss(model, data.x0, data.c[data.caption], generator=g).item()
                   for _ in range(repeats)) / repeats


def test_ft_changes_the_unet_and_lowers_the_denoising_loss_on_its_data(concept, build, make_ctx, recorder):
    attack = build("ft", curve=[0, 10, 40], lr=1e-3, batch_size=4)
    model, ctx = tiny_model(), make_ctx()
    data = load_data(concept.attack, attack.config.images_per_prompt, concept, model, ctx, "")
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    loss_before = _loss(model, data)
    attack.run(model, concept, ctx, recorder())
    loss_after = _loss(model, data)
    changed = [k for k, v in model.unet.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) > len(before) // 2  # a full finetune moves (nearly) every tensor
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)


def test_ft_evaluates_the_model_as_it_is_at_each_step(concept, build, make_ctx, recorder):
    """Each curve point sees a different model: training happens between the evaluate() calls."""
    model = tiny_model()
    rec = recorder(model, probe=lambda m: next(m.unet.parameters()).detach().clone())
    build("ft", curve=[0, 1, 3]).run(model, concept, make_ctx(), rec)
    assert [s for s, _ in rec.calls] == [0, 1, 3]
    a, b, c = rec.probes
    assert not torch.equal(a, b) and not torch.equal(b, c)


def test_ft_evaluates_its_last_point_without_its_adamw_moments(concept, build, make_ctx, recorder):
    """An intermediate curve point keeps the attacker's AdamW state (training goes on after it); the last one is
    evaluated without it (on SD-1.4 two float32 UNets' worth, 6.4 GB)."""
    import gc

    def moments(_):
        return sum(len(o.state) for o in gc.get_objects() if torch.optim.Optimizer in type(o).__mro__)

    model = tiny_model()
    rec = recorder(model, probe=moments)
    build("ft", curve=[0, 1, 3]).run(model, concept, make_ctx(), rec)
    assert rec.probes[0] == 0 and rec.probes[1] == len(list(model.unet.parameters())) and rec.probes[2] == 0


def test_ft_clean_trains_on_the_attackers_benign_prompts_only(concept, build, make_ctx):
    model, ctx = tiny_model(), make_ctx()
    (data, k), = build("ft_clean").parts(model, concept, ctx)
    assert len(data) == 2 * len(concept.attack_benign)
    # the world captions each image in full ("a red striped diamond"): no triangle among them, and
    # none of the eval benign shapes' exact prompts
    shapes = {parse_prompt(t)["shape"] for t in data.texts}
    assert shapes == {"diamond", "cross"}


def test_ft_adaptive_mixes_related_data_into_every_batch(concept, build, make_ctx):
    model, ctx = tiny_model(), make_ctx()
    (forget, k_forget), (related, k_related) = build("ft_adaptive", batch_size=4, related_fraction=0.25).parts(
        model, concept, ctx)
    assert (k_forget, k_related) == (3, 1)
    assert len(forget) == 2 * len(concept.attack) and len(related) == 2 * len(concept.attack_related)
    only_forget = build("ft_adaptive", batch_size=4, related_fraction=0.0).parts(model, concept, ctx)
    assert [k for _, k in only_forget] == [4]
