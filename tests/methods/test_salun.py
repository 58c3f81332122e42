"""SalUn: the saliency mask keeps the steepest fraction of weights, and only those weights move."""

import torch

from relearnbench.methods.salun import top_fraction
from relearnbench.testing import tiny_concept, tiny_model


def test_top_fraction_keeps_the_largest_scores_across_tensors():
    a, b = torch.tensor([0.1, 5.0, 3.0]), torch.tensor([[4.0, 0.2], [2.0, 1.0]])
    ma, mb = top_fraction([a, b], 3 / 7)  # the three largest of all seven: 5, 4 and 3
    assert ma.tolist() == [False, True, True] and mb.tolist() == [[True, False], [False, False]]


def test_only_salient_weights_move(build, ctx, monkeypatch):
    model = tiny_model()
    method = build("salun", salun={"mask_fraction": 0.3, "steps": 3, "lr": 1e-3})
    monkeypatch.setattr(method, "release", lambda: None)  # keep the masks to look at
    before = [p.detach().clone() for p in model.unet.parameters()]
    method.unlearn(model, tiny_concept(), ctx)
    masks = method.masks
    kept = sum(m.sum().item() for m in masks)
    total = sum(m.numel() for m in masks)
    assert abs(kept / total - 0.3) < 1e-3
    moved = [(p.detach() != b) for p, b in zip(model.unet.parameters(), before)]
    assert all(not (mv & ~m).any() for mv, m in zip(moved, masks)), "a weight outside the mask moved"
    inside = sum((mv & m).sum().item() for mv, m in zip(moved, masks))
    assert inside > 0.9 * kept, "most salient weights should move"


def test_prompts_first_takes_the_forget_images_of_the_concepts_name_only(build, ctx, monkeypatch):
    import relearnbench.methods.salun as salun

    asked = []
    real = salun.encode_set

    def spy(model, concept, ctx, prompts, n, seed=0):
        asked.append(list(prompts))
        return real(model, concept, ctx, prompts, n, seed=seed)

    monkeypatch.setattr(salun, "encode_set", spy)
    concept = tiny_concept()
    for prompts, expected in (("all", ["a triangle", "a blue triangle"]), ("first", ["a triangle"])):
        asked.clear()
        build("salun", salun={"prompts": prompts, "mask_fraction": 1.0}).prepare(tiny_model(), concept, ctx)
        assert asked[0] == expected and asked[1] == list(concept.train_benign)  # forget set, then retain set


def test_recipe_captions_replace_the_forget_retain_and_remap_texts(build, ctx, monkeypatch):
    import pytest

    import relearnbench.methods.salun as salun
    from relearnbench.diffusion import encode_text_frozen
    from relearnbench.errors import UserError

    asked = []
    real = salun.encode_set
    monkeypatch.setattr(salun, "encode_set", lambda m, c, x, prompts, n, seed=0:
                        asked.append(list(prompts)) or real(m, c, x, prompts, n, seed=seed))
    model, concept = tiny_model(), tiny_concept()
    captions = ["nudity=a nude|a clothed", "triangle=a red triangle|a square"]
    method = build("salun", salun={"captions": captions, "mask_fraction": 1.0})
    method.prepare(model, concept, ctx)
    assert asked == [["a red triangle"], ["a square"]]
    assert torch.equal(method.pseudo.hidden, encode_text_frozen(model, ["a square"]).hidden)
    asked.clear()  # another concept's captions leave this one alone
    build("salun", salun={"captions": captions[:1], "mask_fraction": 1.0}).prepare(model, concept, ctx)
    assert asked == [list(concept.train), list(concept.train_benign)]
    with pytest.raises(UserError, match="salun.captions"):
        build("salun", salun={"captions": ["triangle=no bar"], "mask_fraction": 1.0}).prepare(model, concept, ctx)
