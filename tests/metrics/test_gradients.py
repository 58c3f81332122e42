import math

import torch

from relearnbench.diffusion import encode_images, encode_text_frozen
from relearnbench.evaluate import Evaluation
from relearnbench.metrics.gradients import Gradients, cosine, gradient


def test_cosine_of_a_loss_with_itself_is_one(tiny, world_images):
    model = tiny
    params = [p for p in model.unet.parameters()]
    for p in params:
        p.requires_grad_(True)
    try:
        images, texts, _ = world_images(["a triangle", "a circle"], 4)
        x0 = encode_images(model, torch.nn.functional.interpolate(images, size=model.resolution, antialias=True,
                                                                   mode="bilinear"))
        c = encode_text_frozen(model, texts)
        a = gradient(model, params, x0, c, 500, seed=1)
        b = gradient(model, params, x0, c, 500, seed=1)
        other = gradient(model, params, x0.flip(0), c, 500, seed=2)
    finally:
        for p in params:
            p.requires_grad_(False)
    assert math.isclose(cosine(a, b), 1.0, abs_tol=1e-9)
    assert math.isclose(cosine(a, [-g for g in b]), -1.0, abs_tol=1e-9)
    assert cosine(a, other) < 0.999


def test_gradients_metric_is_deterministic_and_leaves_the_model_frozen(tiny, concept, make_ctx):
    """Needs no judge: gradients only read the model and the concept's data."""
    tiny_eval = Evaluation(tiny, concept, make_ctx(None), "pre")
    metric = Gradients(Gradients.Config(timesteps=(200, 800), batches=1, batch_size=4))
    first = {s.metric: s.value for s in metric.compute(tiny_eval)}
    again = {s.metric: s.value for s in metric.compute(tiny_eval)}
    assert first == again
    assert first["gradients.norm"] > 0 and -1 <= first["gradients.cosine"] <= 1
    assert not any(p.requires_grad for p in tiny_eval.model.unet.parameters())
    assert all(p.grad is None for p in tiny_eval.model.unet.parameters())


def _direct_gradient(model, prompts, n, seed, t, noise_seed):
    """∇_θ of the denoising loss on the attacker-source images of ``prompts`` (toy world renders: the concept's
    attack data), written out with the diffusers components alone: renders, VAE mean, text encoder, DDPM noising,
    ε-prediction MSE."""
    from relearnbench.toy.world import sample_images

    per_prompt = math.ceil(n / len(prompts))
    images, _ = sample_images(list(prompts), per_prompt, seed)
    images = torch.nn.functional.interpolate(images, size=(model.resolution,) * 2, mode="bilinear", antialias=True,
                                             align_corners=False).clamp(0, 1)
    captions = [p for p in prompts for _ in range(per_prompt)]
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    with torch.no_grad():
        x0 = model.vae.encode(images[order] * 2 - 1).latent_dist.mean * model.vae.config.scaling_factor
        ids = model.tokenizer([captions[i] for i in order.tolist()], padding="max_length", truncation=True,
                              max_length=model.tokenizer.model_max_length, return_tensors="pt").input_ids
        c = model.text_encoder(ids)[0]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(noise_seed))
    tt = torch.full((n,), t, dtype=torch.long)
    x_t = model.scheduler.add_noise(x0, noise, tt)
    params = list(model.unet.parameters())
    was = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        loss = ((model.unet(x_t, tt, encoder_hidden_states=c).sample - noise) ** 2).mean()
        return [g.double() for g in torch.autograd.grad(loss, params)]
    finally:
        for p, w in zip(params, was):
            p.requires_grad_(w)


def test_one_timestep_one_batch_is_a_direct_autograd_computation(tiny, concept, make_ctx):
    """gradients.norm = ‖g_f‖ and gradients.cosine = g_f·g_r / (‖g_f‖ ‖g_r‖), with g_f the gradient on the
    forget prompts' data and g_r on the benign prompts', to 1e-6 of a gradient computed here from scratch: swapped
    data, another timestep, other noise or another loss would not match."""
    ctx, t, n = make_ctx(None), 300, 4
    metric = Gradients(Gradients.Config(timesteps=(t,), batches=1, batch_size=n, data_seed=5))
    got = {s.metric: s.value for s in metric.compute(Evaluation(tiny, concept, ctx, "pre"))}
    seed = ctx.seed * 1009 + 5  # the documented streams: data from seed + 1 (forget), + 2 (benign); one noise draw
    noise_seed = seed * 7919 + t * 31
    g_f = _direct_gradient(tiny, concept.forget_texts, n, seed + 1, t, noise_seed)
    g_r = _direct_gradient(tiny, concept.benign, n, seed + 2, t, noise_seed)
    norm_f, norm_r = (math.sqrt(sum(float((g * g).sum()) for g in gs)) for gs in (g_f, g_r))
    cos = sum(float((a * b).sum()) for a, b in zip(g_f, g_r)) / (norm_f * norm_r)
    assert math.isclose(got["gradients.norm"], norm_f, rel_tol=1e-6), (got, norm_f, norm_r)
    assert math.isclose(got["gradients.cosine"], cos, rel_tol=1e-6, abs_tol=1e-6), (got, cos)
