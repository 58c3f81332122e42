import pathlib

import pytest
import torch
import torch.nn.functional as F

from relearnbench.errors import UserError
from relearnbench.clip import clip_scores, load_clip_model
from relearnbench.metrics.clip import CLIPScore
from relearnbench.metrics.related import Related


PROMPTS = ["a red circle", "a blue triangle", "a striped square", "a yellow dotted cross", "a purple diamond"]


def test_matched_pairs_score_higher_than_mismatched(toy_clip_path, world_images):
    clip = load_clip_model("toy", path=toy_clip_path)
    images, texts, _ = world_images(PROMPTS, 20)
    matched = clip_scores(clip, images, texts)
    shifted = [PROMPTS[(PROMPTS.index(t) + 1) % len(PROMPTS)] for t in texts]
    mismatched = clip_scores(clip, images, shifted)
    assert matched.shape == (100,) and (matched >= 0).all() and (matched <= 100).all()
    assert matched.mean() > mismatched.mean() + 5, (matched.mean(), mismatched.mean())
    # per prompt as well, not only on average
    assert (matched.view(5, 20).mean(1) > mismatched.view(5, 20).mean(1)).all()


def test_clip_metric_on_real_images(toy_judge, toy_clip_path, concept, real_eval, make_ctx):
    ctx = make_ctx(toy_judge)
    metric = CLIPScore(CLIPScore.Config(model="toy", path=toy_clip_path))
    score = metric.compute(real_eval(concept, ctx))[0]
    assert score.metric == "clip" and score.n == 16 and score.lo <= score.value <= score.hi

    class Swapped(real_eval):  # every benign image paired with the other prompt's text
        def images(self, which):
            images, texts, index = super().images(which)
            return images, texts[::-1], index

    swapped = metric.compute(Swapped(concept, ctx))[0]
    assert score.value > swapped.value


def test_related_falls_back_to_clip_without_a_judge_verdict(toy_clip_path, concept, real_eval, make_ctx):
    """A judge that cannot say whether an image shows its prompt (NudeNet, ImageNet) makes
    ``related`` use the CLIP score."""
    from relearnbench.metrics.judges import NudeNetJudge

    ctx = make_ctx(NudeNetJudge())
    scores = Related(Related.Config(clip_model="toy", clip_path=toy_clip_path)).compute(real_eval(concept, ctx))
    assert [s.metric for s in scores] == ["related.related", "related.unrelated"]
    assert all(s.info["measure"] == "clip score" and 0 < s.value <= 100 for s in scores)
    with pytest.raises(UserError, match="measure=clip"):
        Related(Related.Config(measure="judge")).compute(real_eval(concept, ctx))


def test_missing_open_clip_weights_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    from relearnbench import clip as clip_module

    clip_module._load.cache_clear()
    with pytest.raises(UserError, match="never downloads"):
        load_clip_model("ViT-B-32", "openai")
    with pytest.raises(UserError, match="no pretrained weights"):
        load_clip_model("ViT-B-32", "no-such-tag")
    with pytest.raises(UserError, match="does not exist"):
        load_clip_model("ViT-B-32", "openai", str(tmp_path / "missing.pt"))


@torch.no_grad()
def _per_image_clip_scores(clip_folder, images, texts):
    """100 · max(cos, 0) of each image with its own text, one image at a time through the shipped toy CLIP and
    open_clip's own PIL preprocessing (the world's renders are 8-bit exact, so the PIL round trip loses nothing)."""
    from PIL import Image

    from relearnbench.toy.clip import load_clip

    model, preprocess, tokenizer = load_clip(pathlib.Path(clip_folder))
    scores = []
    for image, text in zip(images, texts):
        pil = Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy())
        a = F.normalize(model.encode_image(preprocess(pil)[None]), dim=-1)
        b = F.normalize(model.encode_text(tokenizer([text])), dim=-1)
        scores.append(100 * max(float((a * b).sum()), 0.0))
    return scores


def test_clip_and_related_are_the_mean_of_per_image_clip_scores(toy_clip_path, concept, real_eval, make_ctx):
    """``clip`` on the benign images and ``related`` (measure clip) on each benign set equal the mean of the
    per-image CLIP scores computed here, image by image, with the CLIP's own preprocessing."""
    from relearnbench.api import Judge

    ev = real_eval(concept, make_ctx(Judge()))  # a judge that cannot tell whether an image shows its prompt
    clip = CLIPScore(CLIPScore.Config(model="toy", path=toy_clip_path)).compute(ev)[0]
    related = {s.metric: s for s in Related(Related.Config(clip_model="toy", clip_path=toy_clip_path)).compute(ev)}
    for score, which in ((clip, "benign"), (related["related.related"], "related"),
                         (related["related.unrelated"], "unrelated")):
        images, texts, _ = ev.images(which)
        mine = _per_image_clip_scores(toy_clip_path, images, texts)
        assert score.n == len(mine) and score.value == pytest.approx(sum(mine) / len(mine), abs=1e-3), which
