"""UCE's closed form: preserved concepts keep their key/value outputs, erased ones are mapped to
their guides' outputs within the residual the closed form implies, and nothing else changes.

With C the stacked inputs (erase then preserve), Y their targets (v* = W_old c*, and W_old c_j for
preserved ones), S the per-row scales and G = C Cᵀ, the minimiser of Σ s_k ‖W c_k − y_k‖² +
λ ‖W − W_old‖² leaves the residual W Cᵀ − Yᵀ = λ (W_old Cᵀ − Yᵀ)(S G + λ I)⁻¹: small, not zero."""

import pytest
import torch

from relearnbench.diffusion import encode_text_frozen, tokenize
from relearnbench.testing import tiny_concept, tiny_model


def last_token(model, text):
    """The embedding of a prompt's last word (the token before end-of-text), found independently."""
    ids = tokenize(model, [text])[0].tolist()
    return encode_text_frozen(model, [text])[0, ids.index(model.tokenizer.eos_token_id) - 1].double()


def cross_attention_projections(unet):
    return {f"{n}.{k}": getattr(m, k) for n, m in unet.named_modules() if n.endswith("attn2") for k in ("to_k", "to_v")}


@pytest.mark.parametrize("lamb", [1e-5, 0.1])
def test_closed_form(lamb, build, ctx, unet_state):
    model, concept = tiny_model(), tiny_concept()
    s_e, s_p = 1.0, 2.0
    uce = build("uce", uce={"tokens": "last", "lamb": lamb, "erase_scale": s_e, "preserve_scale": s_p,
                           "preserve": "benign", "preserve_uncond": False, "guide": "anchor"})
    erase = torch.stack([last_token(model, p) for p in concept.train])
    guide = last_token(model, concept.anchor).expand_as(erase)
    keep = torch.stack([last_token(model, p) for p in concept.train_benign])
    old = {k: p.weight.detach().double().clone() for k, p in cross_attention_projections(model.unet).items()}
    before = unet_state(model)
    uce.unlearn(model, concept, ctx)

    after = unet_state(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"{k}.weight" for k in old}, "UCE edits the cross-attention keys and values only"
    C = torch.cat([erase, keep])
    S = torch.diag(torch.tensor([s_e] * len(erase) + [s_p] * len(keep), dtype=torch.float64))
    eye = torch.eye(len(C), dtype=torch.float64)
    for k, proj in cross_attention_projections(model.unet).items():
        W, W_old = proj.weight.detach().double(), old[k]
        Y = torch.cat([guide @ W_old.T, keep @ W_old.T])
        predicted = lamb * (C @ W_old.T - Y).T @ torch.linalg.inv(S @ (C @ C.T) + lamb * eye)
        residual = (C @ W.T - Y).T
        assert torch.allclose(residual, predicted, atol=1e-5), k
        if lamb < 1e-3:  # λ → 0 with independent inputs: preserved outputs kept, erased ones on target
            assert (keep @ W.T - keep @ W_old.T).abs().max() <= 1e-4, k
            assert (erase @ W.T - guide @ W_old.T).abs().max() <= 1e-4, k
        else:  # λ pulls towards W_old: erased outputs only part of the way, as the formula above says
            gap, gap_old = (erase @ W.T - guide @ W_old.T).norm(), (erase @ W_old.T - guide @ W_old.T).norm()
            assert 0 < gap < gap_old, k


def test_tail_tokens_are_erased(build, ctx):
    """The default (the paper's code): every token from the last word on is mapped to the guide's."""
    model, concept = tiny_model(), tiny_concept()
    uce = build("uce", uce={"tokens": "tail", "guide": "anchor"})
    pairs = [uce.erase_tokens(model, p, concept.anchor) for p in concept.train]
    old = {k: p.weight.detach().clone() for k, p in cross_attention_projections(model.unet).items()}
    uce.unlearn(model, concept, ctx)
    for k, proj in cross_attention_projections(model.unet).items():
        for c, g in pairs:
            assert len(c) == len(g) > 70  # the last word, end-of-text and the padding after it
            gap_before = (c @ old[k].T - g @ old[k].T).norm()
            gap_after = (c @ proj.weight.detach().T - g @ old[k].T).norm()
            assert gap_after < 0.9 * gap_before, k


def test_preserving_the_empty_prompt_keeps_its_keys_and_values(build, ctx):
    """preserve_uncond adds "" (whose keys and values guidance uses for every image) to the preserved set."""
    moved = {}
    for keep_uncond in (False, True):
        model, concept = tiny_model(), tiny_concept()
        uce = build("uce", uce={"preserve": "none", "preserve_uncond": keep_uncond, "guide": "anchor"})
        empty = encode_text_frozen(model, [""])[0].double()
        old = {k: p.weight.detach().double().clone() for k, p in cross_attention_projections(model.unet).items()}
        uce.unlearn(model, concept, ctx)
        moved[keep_uncond] = sum(float((empty @ (p.weight.detach().double() - old[k]).T).norm())
                                 for k, p in cross_attention_projections(model.unet).items())
    assert moved[True] < 0.5 * moved[False]


@pytest.mark.parametrize("preserve", ["none", "benign"])
def test_preserve_scale_zero_is_the_paper_scripts_rule(preserve, build, ctx):
    """train_erase.py: preserve_scale = max(0.1, 1/len(retain_texts)); retain_texts = [""] + the preserved
    prompts (tiny_concept: 2 benign prompts, so 1/3 for benign; "" alone gives 1.0)."""
    expected = max(0.1, 1 / (1 + (0 if preserve == "none" else 2)))
    settings = {"preserve": preserve, "preserve_uncond": True}
    models = []
    for s_p in (0.0, expected):
        model = tiny_model()
        build("uce", uce={**settings, "preserve_scale": s_p}).unlearn(model, tiny_concept(), ctx)
        models.append(cross_attention_projections(model.unet))
    auto, explicit = models
    assert all(torch.equal(auto[k].weight, explicit[k].weight) for k in auto)
