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
