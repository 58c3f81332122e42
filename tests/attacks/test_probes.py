"""The three probes (noising, completion, inpaint) and the sampler they share (diffusion.generate)."""

import pytest
import torch
from diffusers import DDIMScheduler

from relearnbench.api import Context
from relearnbench.attacks.completion import probe_jobs, sources
from relearnbench.attacks.inpaint import centre_mask, paste_known
from relearnbench.diffusion import decode_latents, encode_images, generate, posterior_std, sample
from relearnbench.data import GenerateConfig
from relearnbench.evaluate import SampleConfig
from relearnbench.toy import TOY_DIR
from relearnbench.testing import tiny_model


def test_generate_is_the_evaluation_sampler(concept, make_ctx):
    """From pure noise and with no hook, the probes' sampler gives the images evaluate() samples."""
    model, ctx = tiny_model(), make_ctx()
    cfg = ctx.sample_config
    _, jobs, noise, _ = probe_jobs(model, concept, ctx)
    mine = generate(model, jobs, noise, steps=cfg.steps, batch_size=3)  # batches split differently: no matter
    theirs = sample(model, concept.forget, cfg.images_per_prompt, steps=cfg.steps, guidance=cfg.guidance,
                    seed=ctx.seed * 7, batch_size=cfg.batch_size)
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)


def test_posterior_std_is_ddims_sigma_at_eta_one():
    model = tiny_model()
    ddim = DDIMScheduler.from_config(model.scheduler.config)
    ddim.set_timesteps(10)
    ts = ddim.timesteps.tolist()
    for t, t_next in zip(ts, ts[1:]):
        assert abs(posterior_std(model, t, t_next) - float(ddim._get_variance(t, t_next)) ** 0.5) < 1e-6
    assert posterior_std(model, ts[-1], None) == 0  # no noise after the last step


def test_noising_at_zero_is_the_sampler_and_noise_does_not_depend_on_batching(concept, build, make_ctx, recorder):
    model, ctx = tiny_model(), make_ctx()
    runs = []
    for batch_size in (64, 1):
        ctx.sample_config = SampleConfig(images_per_prompt=2, steps=3, guidance=3.0, batch_size=batch_size)
        rec = recorder()
        build("noising", curve=[0, 500]).run(model, concept, ctx, rec)
        runs.append(rec.images)
    (plain, noised), (plain_1, noised_1) = runs
    torch.testing.assert_close(plain, sample(model, concept.forget, 2, steps=3, guidance=3.0, seed=0), atol=1e-5, rtol=0)
    assert (noised - plain).abs().mean() > 1e-3  # η = 0.5 changes the images
    torch.testing.assert_close(noised, noised_1, atol=1e-5, rtol=0)
    torch.testing.assert_close(plain_1, plain, atol=1e-5, rtol=0)


def test_inpaint_keeps_the_known_region_and_spans_source_to_sampling(concept, build, make_ctx, recorder):
    model, ctx = tiny_model(), make_ctx()
    x0 = torch.randn(2, 4, 8, 8)
    noise = torch.randn(2, 4, 8, 8)
    m = centre_mask(0.5, 8)
    assert m.sum() == 16 and m[0, 0, 2:6, 2:6].all()
    hook = paste_known(model, m, x0, noise)
    x = torch.randn(2, 4, 8, 8)
    out = hook(x, 1, None, [0, 1])  # after the last step: x0 outside the hole, the model's latents inside
    assert torch.equal(out * (1 - m), x0 * (1 - m)) and torch.equal(out * m, x * m)
    mid = hook(x[1:], 501, 251, [1])  # before it: x0 noised to the new timestep outside
    noised = model.scheduler.add_noise(x0[1:], noise[1:], torch.tensor([251]))
    torch.testing.assert_close(mid * (1 - m), noised * (1 - m))

    rec = recorder()
    build("inpaint", curve=[0, 1000]).run(model, concept, ctx, rec)
    cfg = ctx.sample_config
    src = sources(model, concept, ctx, "concept", "", cfg.images_per_prompt)
    torch.testing.assert_close(rec.images[0], decode_latents(model, encode_images(model, src)))  # nothing masked
    _, jobs, eps, _ = probe_jobs(model, concept, ctx)
    torch.testing.assert_close(rec.images[1], generate(model, jobs, eps, steps=cfg.steps), atol=1e-5, rtol=0)


@pytest.mark.skipif(not (TOY_DIR / "model" / "model_index.json").exists(), reason="toy model not built")
def test_completion_is_the_identity_at_zero_and_its_asr_rises_with_t_start():
    """On the original toy model: at strength 0 (t_start = 0) completion hands back its source images
    (through the VAE) and the judge reads them as it reads the sources; from benign sources (the control)
    and the forget prompts, ASR rises with t_start as the model's own drawing replaces the context."""
    from relearnbench.concepts import load_concept
    from relearnbench.config import instantiate
    from relearnbench.models import ModelConfig, load_model
    from relearnbench.registry import ATTACKS, JUDGES

    model, concept = load_model("toy", ModelConfig()), load_concept("triangle")
    judge = instantiate(JUDGES.get(concept.judge), "toy", {}, concept.judge_config)
    ctx = Context(device="cpu", dtype=torch.float32, seed=0, judge=judge,
                  sample_config=SampleConfig(images_per_prompt=2, steps=20, guidance=5.0, batch_size=64),
                  generate_config=GenerateConfig(steps=20, guidance=5.0, batch_size=64))
    asr = {}
    for source in ("concept", "benign"):
        attack = instantiate(ATTACKS.get("completion"), "toy", {"completion": {"curve": [0, 500, 1000]}},
                             {"source": source})
        got = {}
        attack.run(model, concept, ctx, lambda step, final=True, images=None: got.setdefault(step, images))
        src = sources(model, concept, ctx, source, "", 2)
        assert torch.equal(got[0], decode_latents(model, encode_images(model, src)))
        assert (got[0] - src).abs().mean() < 0.05  # the toy VAE's round trip
        assert torch.equal(judge.flags(got[0], concept), judge.flags(src, concept))
        asr[source] = {k: judge.flags(v, concept).float().mean().item() * 100 for k, v in got.items()}
    assert asr["concept"][0] >= 90  # the sources are triangles
    assert asr["benign"][0] <= 10  # diamonds, circles, squares, crosses
    assert asr["benign"][0] < asr["benign"][500] <= asr["benign"][1000]
    assert asr["benign"][1000] >= 75  # the original model draws the prompt's triangle


# the probes' seeds as documented (completion.probe_jobs, diffusion.image_jobs): the evaluation's forget stream
# ctx.seed · 7; image j of prompt i from base = the prompt's own seed, else that stream · 100003 + i, at base · 1000 + j
def _forget_seeds(concept, seed, n):
    return [(p.seed if p.seed is not None else seed * 7 * 100003 + i) * 1000 + j
            for i, p in enumerate(concept.forget) for j in range(n)]


def _ddim_timesteps(model, steps):
    ddim = DDIMScheduler.from_config(model.scheduler.config)
    ddim.set_timesteps(steps)
    return ddim, [int(t) for t in ddim.timesteps]


def test_noising_adds_eta_times_the_posterior_std_times_z_at_each_step(concept, build, make_ctx, recorder, monkeypatch):
    """After each DDIM step t → t' the latents gain exactly η · σ_t · z: σ_t the DDPM posterior std
    √((1 − ᾱ_t')/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_t')) (ᾱ = 1 after the last step), z the next draw of the image's own
    generator, the one its initial noise came from."""
    import relearnbench.attacks.noising as noising

    model, ctx = tiny_model(), make_ctx()
    ctx.sample_config = SampleConfig(images_per_prompt=2, steps=3, guidance=3.0, batch_size=64)
    steps = []  # (x before the hook, x after, t, t_next, rows)
    real = noising.generate

    def spy(*args, on_step=None, **kwargs):
        def hook(x, t, t_next, rows):
            out = on_step(x, t, t_next, rows)
            steps.append((x.clone(), out.clone(), t, t_next, list(rows)))
            return out
        return real(*args, on_step=hook, **kwargs)

    monkeypatch.setattr(noising, "generate", spy)
    build("noising", curve=[500]).run(model, concept, ctx, recorder())

    _, ts = _ddim_timesteps(model, 3)
    assert [(t, t_next) for _, _, t, t_next, _ in steps] == list(zip(ts, ts[1:] + [None]))
    generators = [torch.Generator().manual_seed(s) for s in _forget_seeds(concept, ctx.seed, 2)]
    for g in generators:
        torch.randn((4, 8, 8), generator=g)  # x_T
    a = model.scheduler.alphas_cumprod.double()
    for x, out, t, t_next, rows in steps:
        a_next = 1.0 if t_next is None else a[t_next]
        sigma = float(((1 - a_next) / (1 - a[t]) * (1 - a[t] / a_next)).sqrt())
        z = torch.stack([torch.randn((4, 8, 8), generator=generators[r]) for r in rows])
        torch.testing.assert_close(out - x, 0.5 * sigma * z, atol=1e-6, rtol=1e-5)
    assert steps[0][2:4] == (ts[0], ts[1]) and (steps[0][1] - steps[0][0]).abs().max() > 0.1  # noise was added
    assert torch.equal(steps[-1][1], steps[-1][0])  # and none after the last step


@torch.no_grad()
def test_completion_starts_at_the_documented_step_and_is_a_plain_ddim_loop(concept, build, make_ctx, recorder,
                                                                            monkeypatch):
    """The documented strength → t_start mapping at 10 steps (0.25, 0.5, 0.75, 1 → 101, 401, 701, 901), and at
    0.5 the images of a plain loop written here: x = add_noise(x0, ε, 401), then DDIM with classifier-free
    guidance over 401, 301, 201, 101, 1, decoded by the VAE."""
    import relearnbench.diffusion as diffusion

    model, ctx = tiny_model(), make_ctx()
    ctx.sample_config = SampleConfig(images_per_prompt=2, steps=10, guidance=3.0, batch_size=64)
    starts, real_add_noise = [], diffusion.add_noise
    monkeypatch.setattr(diffusion, "add_noise", lambda m, x0, eps, t: starts.append(t.tolist()) or real_add_noise(m, x0, eps, t))
    rec = recorder()
    build("completion", curve=[250, 500, 750, 1000]).run(model, concept, ctx, rec)
    assert [s[0] for s in starts] == [101, 401, 701, 901] and all(len(set(s)) == 1 for s in starts)

    sched, ts = _ddim_timesteps(model, 10)
    ts = [t for t in ts if t <= 401]
    assert ts == [401, 301, 201, 101, 1]
    vae, sf = model.vae, model.vae.config.scaling_factor
    x0 = vae.encode(sources(model, concept, ctx, "concept", "", 2) * 2 - 1).latent_dist.mean * sf
    eps = torch.stack([torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(s))
                       for s in _forget_seeds(concept, ctx.seed, 2)])
    x = model.scheduler.add_noise(x0, eps, torch.tensor([401]))

    def hidden(texts):
        ids = model.tokenizer(texts, padding="max_length", truncation=True,
                              max_length=model.tokenizer.model_max_length, return_tensors="pt").input_ids
        return model.text_encoder(ids)[0]

    c = hidden([p.text for p in concept.forget for _ in range(2)])
    uncond = hidden([""] * len(c))
    scale = torch.tensor([p.guidance or 3.0 for p in concept.forget for _ in range(2)]).view(-1, 1, 1, 1)
    for t in ts:
        e_u = model.unet(x, t, encoder_hidden_states=uncond).sample
        e_c = model.unet(x, t, encoder_hidden_states=c).sample
        x = sched.step(e_u + scale * (e_c - e_u), t, x).prev_sample
    images = ((vae.decode(x / sf).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(rec.images[1], images, atol=1e-5, rtol=0)
