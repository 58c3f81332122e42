"""SPM: a rank-one adapter on the published layers, trained on the erasing loss plus latent anchoring, merged into
the UNet at the end; nothing else moves."""

import torch
import torch.nn.functional as F

from relearnbench.diffusion import encode_text_frozen
from relearnbench.methods.spm import ADAPTER, adapter_targets
from relearnbench.testing import tiny_concept, tiny_model

SMALL = dict(steps=4, ddim_steps=4, warmup=0, lr=1e-2, weight_decay=0.0)


def test_the_result_is_a_rank_one_update_of_the_published_layers_only(build, ctx):
    model = tiny_model()
    targets = adapter_targets(model.unet)
    before = {k: v.detach().clone() for k, v in model.unet.state_dict().items()}
    build("spm", spm=SMALL).unlearn(model, tiny_concept(), ctx)
    after = model.unet.state_dict()
    assert set(after) == set(before), "the adapter is merged and its layers removed: the original's keys"
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == {f"{t}.weight" for t in targets}  # every adapted weight, no bias, nothing outside them
    for k in moved:
        delta = (after[k] - before[k]).double().flatten(1)  # a conv's [out, in, kh, kw] as [out, in·kh·kw]
        s = torch.linalg.svdvals(delta)
        assert s[0] > 1e-4 and s[1] < 1e-4 * s[0], f"{k}: ΔW is not rank one (singular values {s[:3].tolist()})"


def test_targets_are_every_linear_and_conv_of_the_transformer_blocks():
    from diffusers import UNet2DConditionModel

    from relearnbench.models import ARCHITECTURES

    with torch.device("meta"):
        unet = UNet2DConditionModel(sample_size=64, **ARCHITECTURES["sd14"]["unet"])
    targets = adapter_targets(unet)
    suffixes = {t.split("transformer_blocks.0.")[1] if "transformer_blocks" in t else t.split(".")[-1] for t in targets}
    assert suffixes == {"proj_in", "proj_out", "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                        "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2"}
    assert all(".attentions." in t for t in targets) and len(targets) == 16 * 12
    modules = dict(unet.named_modules())
    params = sum(m.weight[0].numel() + m.weight.shape[0] for m in map(modules.get, targets))  # A: 1 x in, B: out x 1
    assert params * 4 == 1_695_744  # float32: the "1.7MB" of an SD-1.4 SPM (Con6924/SPM README)


def test_the_loss_is_the_published_erasing_and_anchoring_terms(build, ctx):
    """An independent reading of train_spm.py at one step: the original by switching the adapter off, the anchors
    drawn by src/engine/sampling.py's rule and pushed through predict_noise's classifier-free-guidance call."""
    model, concept = tiny_model(), tiny_concept()
    lam, eta = 100.0, 1.5
    spm = build("spm", spm={**SMALL, "la_strength": lam, "eta": eta, "anchors": 4})
    spm.prepare(model, concept, ctx)
    with torch.no_grad():  # a trained adapter: B away from zero
        for n, p in model.unet.named_parameters():
            if f".{ADAPTER}." in n:
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    spm.generator.manual_seed(7)
    loss = spm.loss(model, 0)

    g = spm.generator.manual_seed(7)
    c = spm.c[torch.randint(len(spm.c), (1,), generator=g)]
    assert torch.equal(c.hidden, encode_text_frozen(model, [concept.train[0]]).hidden)  # the concept's name
    x_t, t = spm.xt(model, c)
    u = encode_text_frozen(model, [""]).hidden
    anchors = []
    while len(anchors) < 4:
        d = torch.randn(c.hidden[0].shape, generator=g)
        d = d / d.flatten().norm()
        if torch.rand((), generator=g) < 1 - F.cosine_similarity(c.hidden.flatten(), d.flatten(), dim=0):
            anchors.append((0.8 + 0.4 * torch.rand((), generator=g)) * d * c.hidden.norm())
    packed = torch.cat([torch.cat([u, a[None]]) for a in anchors])  # sampling.py: [uncond, anchor, uncond, ...]

    def eps(h, x, adapter: bool):
        (model.unet.enable_adapters if adapter else model.unet.disable_adapters)()
        try:
            return model.unet(x, t.expand(x.shape[0]), encoder_hidden_states=h).sample
        finally:
            model.unet.enable_adapters()

    def predict_noise(h, adapter):  # train_util.predict_noise at guidance_scale=1 on 4 copies of x_t
        uncond, text = eps(h, torch.cat([x_t.repeat(4, 1, 1, 1)] * 2), adapter).chunk(2)
        return uncond + 1 * (text - uncond)

    with torch.no_grad():
        pos, neu = eps(c.hidden, x_t, False), eps(u, x_t, False)
        erase = F.mse_loss(eps(c.hidden, x_t, True), neu - eta * (pos - neu))
        anchoring = F.mse_loss(predict_noise(packed, True), predict_noise(packed, False))
    assert anchoring > 0
    assert torch.allclose(loss, erase + lam * anchoring, rtol=1e-4), (loss.item(), erase.item(), anchoring.item())
    T = model.scheduler.config.num_train_timesteps
    assert int(t[0]) in {T - 1 - int(stop * T / 4) for stop in (1, 2, 3)}  # train_spm.py's label, stop ≥ 1
    spm.release()


def test_anchors_follow_the_published_sampling_rule():
    from relearnbench.methods.spm import sample_anchors

    c = torch.randn(77, 64, generator=torch.Generator().manual_seed(0))
    a = sample_anchors(c, 50, torch.Generator().manual_seed(1))
    ratio = a.flatten(1).norm(dim=1) / c.norm()
    assert a.shape == (50, 77, 64) and ratio.min() >= 0.8 - 1e-6 and ratio.max() <= 1.2 + 1e-6
    assert ratio.max() - ratio.min() > 0.2  # scaled by U(0.8, 1.2), not a constant
    assert F.cosine_similarity(a.flatten(1), c.flatten()[None]).abs().max() < 0.1  # random directions, far from c


def test_the_learning_rate_warms_up_from_zero_and_the_loop_steps_the_schedule(build, ctx):
    """The published schedule starts at lr 0 (warm-up): one step moves nothing; its second step has the full rate
    (warm-up 1 of 2 steps), which it only gets if the loop steps the schedule."""
    moved = []
    for steps in (1, 2):
        model = tiny_model()
        before = {k: v.detach().clone() for k, v in model.unet.state_dict().items()}
        build("spm", spm={**SMALL, "steps": steps, "warmup": 1}).unlearn(model, tiny_concept(), ctx)
        moved.append(sum(not torch.equal(before[k], v) for k, v in model.unet.state_dict().items()))
    assert moved[0] == 0 and moved[1] > 0, moved
