"""SDD: the student's prediction under the concept moves towards its own unconditional one, only the chosen
weights train, and the unlearned model is the EMA teacher (between the original and the student)."""

import pytest
import torch

from relearnbench.diffusion import encode_text_frozen, predict
from relearnbench.errors import UserError
from relearnbench.testing import tiny_concept, tiny_model

SMALL = dict(steps=12, lr=3e-3, batch_size=2, ddim_steps=4, prompts="all")


def gap(model, concept):
    """‖ε(x, t, c) − ε(x, t, ∅)‖² of the concept's train prompts on fixed noised latents."""
    g = torch.Generator().manual_seed(1)
    c = encode_text_frozen(model, list(concept.train))
    x = torch.randn((len(c), 4, 8, 8), generator=g)
    t = torch.full((len(c),), 500)
    uncond = encode_text_frozen(model, [""]).expand(len(c))
    with torch.no_grad():
        return float(((predict(model.unet, x, t, c) - predict(model.unet, x, t, uncond)) ** 2).mean())


def flat(model, names):
    return torch.cat([p.detach().flatten() for n, p in model.unet.named_parameters() if n in names])


def test_student_distils_the_concept_to_the_empty_prompt(build, ctx):
    concept = tiny_concept()
    original, model = tiny_model(), tiny_model()
    build("sdd", sdd={**SMALL, "result": "student"}).unlearn(model, concept, ctx)
    assert gap(model, concept) < 0.5 * gap(original, concept)
    xattn = {n for n, _ in model.unet.named_parameters() if ".attn2." in n}
    others = {n for n, _ in model.unet.named_parameters()} - xattn
    assert torch.equal(flat(model, others), flat(original, others)), "train=x moves cross-attention only"


def test_the_result_is_the_ema_teacher(build, ctx):
    concept = tiny_concept()
    original, student, ema = tiny_model(), tiny_model(), tiny_model()
    build("sdd", sdd={**SMALL, "result": "student", "ema_decay": 0.8}).unlearn(student, concept, ctx)
    build("sdd", sdd={**SMALL, "result": "ema", "ema_decay": 0.8}).unlearn(ema, concept, ctx)
    names = {n for n, _ in original.unet.named_parameters() if ".attn2." in n}
    moved_student = (flat(student, names) - flat(original, names)).norm()
    moved_ema = (flat(ema, names) - flat(original, names)).norm()
    # the same student trajectory (same seed); the EMA lags it: it moved, but less
    assert 0 < moved_ema < moved_student


def test_a_frozen_teacher_cannot_be_the_result(build, ctx):
    with pytest.raises(UserError, match="sdd.result=student"):
        build("sdd", sdd={**SMALL, "ema_decay": 0.0, "result": "ema"}).unlearn(tiny_model(), tiny_concept(), ctx)
