"""UCE's closed form: preserved concepts keep their key/value outputs, erased ones are mapped to
their guides' outputs within the residual the closed form implies, and nothing else changes.

With C the stacked inputs (erase then preserve), Y their targets (v* = W_old c*, and W_old c_j for
preserved ones), S the per-row scales and G = C Cᵀ, the minimiser of Σ s_k ‖W c_k − y_k‖² +
λ ‖W − W_old‖² leaves the residual W Cᵀ − Yᵀ = λ (W_old Cᵀ − Yᵀ)(S G + λ I)⁻¹: small, not zero."""

import pytest
import torch

from relearnbench.testing import tiny_concept, tiny_model


def token_ids(model, text) -> list[int]:
    return model.tokenizer(text, padding="max_length", truncation=True,
                           max_length=model.tokenizer.model_max_length).input_ids


@torch.no_grad()
def hidden_states(model, text):
    """The text encoder's last hidden state of a prompt [77, D], float64: what UCE's projections read."""
    return model.text_encoder(torch.tensor([token_ids(model, text)]))[0][0].double()


def last_token(model, text):
    """The embedding of a prompt's last word (the token before end-of-text), found independently."""
    return hidden_states(model, text)[token_ids(model, text).index(model.tokenizer.eos_token_id) - 1]


def cross_attention_projections(unet):
    return {f"{n}.{k}": getattr(m, k) for n, m in unet.named_modules() if n.endswith("attn2") for k in ("to_k", "to_v")}


def closed_form_residuals(model, old, erase, guide, keep, s_e, s_p, lamb):
    """Asserts, for each edited projection, the residual W Cᵀ − Yᵀ = λ (W_old Cᵀ − Yᵀ)(S G + λ I)⁻¹ of the module
    docstring; returns (name, W, W_old) of each."""
    C = torch.cat([erase, keep])
    S = torch.diag(torch.tensor([s_e] * len(erase) + [s_p] * len(keep), dtype=torch.float64))
    eye = torch.eye(len(C), dtype=torch.float64)
    out = []
    for k, proj in cross_attention_projections(model.unet).items():
        W, W_old = proj.weight.detach().double(), old[k]
        Y = torch.cat([guide @ W_old.T, keep @ W_old.T])
        predicted = lamb * (C @ W_old.T - Y).T @ torch.linalg.inv(S @ (C @ C.T) + lamb * eye)
        residual = (C @ W.T - Y).T
        assert torch.allclose(residual, predicted, atol=1e-5), (k, (residual - predicted).abs().max())
        out.append((k, W, W_old))
    return out


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
    for k, W, W_old in closed_form_residuals(model, old, erase, guide, keep, s_e, s_p, lamb):
        if lamb < 1e-3:  # λ → 0 with independent inputs: preserved outputs kept, erased ones on target
            assert (keep @ W.T - keep @ W_old.T).abs().max() <= 1e-4, k
            assert (erase @ W.T - guide @ W_old.T).abs().max() <= 1e-4, k
        else:  # λ pulls towards W_old: erased outputs only part of the way, as the formula above says
            gap, gap_old = (erase @ W.T - guide @ W_old.T).norm(), (erase @ W_old.T - guide @ W_old.T).norm()
            assert 0 < gap < gap_old, k


def tail_tokens(model, text, guide):
    """The paper code's tokens of a prompt and its guide, found independently: from each one's last word (the
    token before the first end-of-text) to the end of the 77, both cut to the shorter tail, aligned."""
    embs = [hidden_states(model, t) for t in (text, guide)]
    starts = [token_ids(model, t).index(model.tokenizer.eos_token_id) - 1 for t in (text, guide)]
    n = min(len(e) - s for e, s in zip(embs, starts))
    return embs[0][starts[0]:starts[0] + n], embs[1][starts[1]:starts[1] + n]


def test_closed_form_tail(build, ctx):
    """The shipped default (``tokens = "tail"``) against the closed form's residual, as test_closed_form does
    for ``last``: each erased prompt contributes its tail (last word, end-of-text, padding) mapped to its guide's
    aligned tail, each preserved prompt all 77 of its tokens."""
    model, concept = tiny_model(), tiny_concept()
    s_e, s_p, lamb = 1.0, 2.0, 0.1
    uce = build("uce", uce={"tokens": "tail", "lamb": lamb, "erase_scale": s_e, "preserve_scale": s_p,
                           "preserve": "benign", "preserve_uncond": False, "guide": "anchor"})
    pairs = [tail_tokens(model, p, concept.anchor) for p in concept.train]
    erase, guide = torch.cat([c for c, _ in pairs]), torch.cat([g for _, g in pairs])
    keep = torch.cat([hidden_states(model, p) for p in concept.train_benign])
    assert len(keep) == 2 * 77 and len(erase) > 2 * 70
    old = {k: p.weight.detach().double().clone() for k, p in cross_attention_projections(model.unet).items()}
    uce.unlearn(model, concept, ctx)
    assert len(closed_form_residuals(model, old, erase, guide, keep, s_e, s_p, lamb)) == len(old)


def test_preserving_the_empty_prompt_keeps_its_keys_and_values(build, ctx):
    """preserve_uncond adds "" (whose keys and values guidance uses for every image) to the preserved set."""
    moved = {}
    for keep_uncond in (False, True):
        model, concept = tiny_model(), tiny_concept()
        # at a small λ (the toy preset's 30 pulls every weight back, "" included, either way)
        uce = build("uce", uce={"preserve": "none", "preserve_uncond": keep_uncond, "guide": "anchor", "lamb": 0.1})
        empty = hidden_states(model, "")
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
