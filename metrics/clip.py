"""CLIP score: how well images match their prompts (Hessel et al. 2021, without their w = 2.5).

    CLIPScore(image, prompt) = 100 · max(cos(E_I(image), E_T(prompt)), 0)

averaged over the images of the concept's benign prompts (related + unrelated), or of a caption CSV's
(``prompts = "coco_10k.csv"``: the images FID scores, at each row's seed), with a 95 % bootstrap interval
over prompts. On Stable Diffusion the CLIP is open_clip's ViT-L-14 or ViT-B-32
(OpenAI weights) from the local cache; on the toy world it is the tiny CLIP trained on the world
and shipped in relearnbench/toy/assets/clip. Which one is chosen by config (clip.toml presets).

The loader (``relearnbench.clip``) is shared with the ``clip_zeroshot`` judge and the ``related`` metric.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

from relearnbench.api import Metric, Score
from relearnbench.clip import clip_description, clip_missing, clip_scores, load_clip_model


class CLIPScore(Metric):
    """CLIP score (100 × cosine, floored at 0) of the benign prompts and their images."""

    @dataclass(frozen=True)
    class Config:
        model: str = "ViT-L-14"  # open_clip architecture, or "toy" for the shipped tiny CLIP
        pretrained: str = "openai"  # open_clip pretrained tag, found in the local cache only
        path: str = ""  # a checkpoint file (or toy CLIP folder) instead of the cache
        prompts: str = "benign"  # which prompt set's images: benign, related, unrelated, forget, or a caption CSV
        batch_size: int = 64  # images per CLIP forward pass
        bootstrap: int = 1000  # prompt resamples for the 95 % interval

    config_name = "clip"
    version = "1"

    def preflight(self, concept, judge) -> list[str]:
        c = self.config
        captions = [] if not c.prompts.endswith(".csv") or pathlib.Path(c.prompts).is_file() else [
            f"clip.prompts {c.prompts}: no such caption file; --set clip.prompts=coco_10k.csv (Diffusion-MU-Attack "
            f"prompts/coco_10k.csv, the captions fid.prompts scores too)"]
        return captions + clip_missing(c.model, c.pretrained, c.path, "clip.path")

    def compute(self, ev) -> list[Score]:
        from relearnbench.metrics.stats import mean_and_interval

        c = self.config
        if c.prompts.endswith(".csv"):  # the images FID scores of the same file (fid.count = 0): sampled once
            from relearnbench.metrics.fid import read_captions

            captions = read_captions(c.prompts)
            images = ev.sample_prompts(f"fid:{c.prompts}:0", captions)
            texts, index = [p.text for p in captions], list(range(len(captions)))
        else:
            images, texts, index = ev.images(c.prompts)
        device = ev.model.unet.device
        clip = load_clip_model(c.model, c.pretrained, c.path, device)
        scores = clip_scores(clip, images.to(device), texts, c.batch_size)
        value, lo, hi = mean_and_interval(scores.numpy(), index, resamples=c.bootstrap, seed=ev.ctx.seed)
        return [Score("clip", value, lo, hi, n=len(scores),
                      info={**clip_description(c.model, c.pretrained, c.path), "prompts": c.prompts,
                            "n_prompts": len(set(index))})]
