"""Forget-Me-Not: the attention processors read true cross-attention probabilities at the concept's token
positions without changing what the UNet computes, and training lowers the attention those tokens get."""

import torch

from relearnbench.diffusion import encode_text_frozen, noised, predict
from relearnbench.testing import tiny_concept, tiny_model

SMALL = dict(steps=2, batch_size=2, images=4)


def _inputs(model, text, n=2):
    g = torch.Generator().manual_seed(1)
    x_t, t, _ = noised(model, torch.randn(n, 4, 8, 8, generator=g), g)
    return x_t, t, encode_text_frozen(model, [text] * n)


def test_positions_are_the_keyword_and_the_end_of_text(build):
    model = tiny_model()
    fmn = build("fmn", fmn=SMALL)
    mask = fmn.concept_positions(model, tiny_concept(), ["a blue triangle", "a triangle"])
    # <start> a blue triangle <end> ...: the keyword (the concept's name) and the first end-of-text token
    assert mask[0].nonzero().flatten().tolist() == [3, 4]
    assert mask[1].nonzero().flatten().tolist() == [2, 3]


def test_maps_are_attention_probabilities_and_the_output_is_unchanged(build, ctx):
    model = tiny_model()
    x_t, t, c = _inputs(model, "a blue triangle")
    with torch.no_grad():
        plain = predict(model.unet, x_t, t, c)
    fmn = build("fmn", fmn=SMALL)
    fmn.prepare(model, tiny_concept(), ctx)
    fmn.positions.append(torch.ones(2, 77, dtype=torch.bool))  # every token: each query's row sums to 1
    with torch.no_grad():
        hooked = predict(model.unet, x_t, t, c)
    fmn.positions.clear()
    assert torch.allclose(hooked, plain, atol=1e-5)
    attn2 = [m for n, m in model.unet.named_modules() if n.endswith("attn2")]
    assert len(fmn.maps) == len(attn2)
    for maps, module in zip(fmn.maps, attn2):
        rows = maps.view(-1, 77).sum(-1)  # [B·heads·HW]
        assert rows.shape[0] % (2 * module.heads) == 0 and torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    fmn.release()
    assert not any(type(p).__name__ == "ConceptMaps" for p in model.unet.attn_processors.values())


def test_training_lowers_the_concepts_attention(build, ctx):
    model = tiny_model()
    concept = tiny_concept()
    probe = build("fmn", fmn=SMALL)
    x_t, t, c = _inputs(model, "a blue triangle")
    mask = probe.concept_positions(model, concept, ["a blue triangle"]).expand(2, -1)

    def attention():
        probe.prepare(model, concept, ctx)
        probe.positions.append(mask)
        with torch.no_grad():
            predict(model.unet, x_t, t, c)
        out = torch.cat(probe.maps).norm().item()
        probe.release()
        return out

    before = attention()
    build("fmn", fmn={**SMALL, "steps": 20, "lr": 1e-2}).unlearn(model, concept, ctx)
    assert attention() < 0.5 * before
