"""One evaluation stage: images are sampled once per prompt set and shared by every metric."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Sequence

from relearnbench import seeds
from relearnbench.api import Concept, Context, Model, Prompt


@dataclass(frozen=True)
class SampleConfig:
    """The evaluation's sampler (``sample.*``): what every metric's images are made with, and nothing else (the
    training images the original model generates have their own, ``relearnbench.data.GenerateConfig``)."""

    images_per_prompt: int = 4  # images sampled per forget prompt
    benign_images_per_prompt: int = 4  # images sampled per related / unrelated benign prompt
    steps: int = 20  # sampler steps
    guidance: float = 5.0  # classifier-free guidance scale, unless the prompt file sets one
    batch_size: int = 32  # images per sampler call
    # ddim: DDIM from seeds of our own; unlearndiffatk: UnlearnDiffAtk's LMS sampler at each prompt's file seed;
    # auto: unlearndiffatk for a prompt set whose every prompt has a file seed (a prompt CSV), else ddim
    sampler: Literal["ddim", "unlearndiffatk", "auto"] = "ddim"

    def sampler_for(self, prompts: Sequence[Prompt]) -> str:
        if self.sampler != "auto":
            return self.sampler
        return "unlearndiffatk" if prompts and all(p.seed is not None for p in prompts) else "ddim"


SampleConfig.config_name = "sample"  # the --set namespace: --set sample.steps=50


class Evaluation:
    """What a metric sees: the model at one stage, its concept, the judge, and shared images."""

    def __init__(self, model: Model, concept: Concept, ctx: Context, stage: str,
                 forget_prompts: Optional[Sequence[Prompt]] = None, forget_images=None):
        self.model, self.concept, self.ctx, self.stage = model, concept, ctx, stage
        self.config: SampleConfig = ctx.sample_config
        self.forget_prompts = tuple(forget_prompts) if forget_prompts is not None else concept.forget
        self._images: dict[str, tuple] = {}
        self.sample_seconds = 0.0  # of this stage's seconds, those spent sampling images
        if forget_images is not None:  # a probe made them (prompt-major, as many per prompt)
            n, rest = divmod(len(forget_images), len(self.forget_prompts))
            if rest or not n:
                raise ValueError(f"{len(forget_images)} forget images for {len(self.forget_prompts)} prompts")
            self._images["forget"] = (forget_images, [p.text for p in self.forget_prompts for _ in range(n)],
                                      [i for i in range(len(self.forget_prompts)) for _ in range(n)])
        self.cell: dict = {}  # model, concept, method, (attack,) seed: set by the harness

    @property
    def judge(self):
        return self.ctx.judge

    def prompts(self, which: str) -> tuple[Prompt, ...]:
        if which == "forget":
            return self.forget_prompts
        texts = {"related": self.concept.related, "unrelated": self.concept.unrelated,
                 "benign": self.concept.benign}[which]
        return tuple(Prompt(t) for t in texts)

    def images(self, which: str):
        """(images [N,3,H,W] in [0,1], prompt text per image, prompt index per image) for
        ``which`` in forget / related / unrelated / benign; sampled on first use, then shared."""
        if which == "benign":  # always related + unrelated: the same images whichever metric asks first
            import torch
            r, u = self.images("related"), self.images("unrelated")
            n = len(self.concept.related)
            return torch.cat([r[0], u[0]]), r[1] + u[1], r[2] + [i + n for i in u[2]]
        if which not in self._images:
            import time

            from relearnbench.diffusion import sample

            t0 = time.perf_counter()
            prompts = self.prompts(which)
            n = self._per_prompt(which)
            # benign prompts get their own seed stream so adding a prompt to one set leaves the other alone
            seed = seeds.of(self.ctx.seed, f"eval-{which}")
            imgs = sample(self.model, prompts, n, steps=self.config.steps, guidance=self.config.guidance,
                          seed=seed, batch_size=self.config.batch_size, progress=self.ctx.progress,
                          # an attack's prompts (seeds filled in) are sampled as the concept's own
                          sampler=self.config.sampler_for(self.concept.forget if which == "forget" else prompts))
            texts = [p.text for p in prompts for _ in range(n)]
            index = [i for i in range(len(prompts)) for _ in range(n)]
            self._images[which] = (imgs, texts, index)
            self.sample_seconds += time.perf_counter() - t0
        return self._images[which]

    def sample_prompts(self, key: str, prompts: Sequence[Prompt], n: int = 1):
        """Images [len(prompts)·n, 3, H, W] of prompts outside the concept's sets (a FID caption file), at
        their own seeds, with the stage's sampler; sampled once per ``key`` and stage."""
        if key not in self._images:
            from relearnbench.diffusion import sample

            seed = seeds.of(self.ctx.seed, "eval-prompt-file")
            self._images[key] = sample(self.model, prompts, n, steps=self.config.steps, guidance=self.config.guidance,
                                       seed=seed, batch_size=self.config.batch_size, progress=self.ctx.progress,
                                       sampler=self.config.sampler_for(prompts))
        return self._images[key]

    def contact_sheet(self, width: int = 8):
        """The images already sampled at this stage, a row each of forget, related and unrelated (the
        first image of each prompt, ``width`` at most), as one float [3,H,W] grid, a forget image the judge
        flags framed red; and each row's prompts with the flags. (None, {}) if none were sampled."""
        if not any(w in self._images for w in ("forget", "related", "unrelated")):
            return None, {}
        import torch
        from torchvision.utils import make_grid

        rows, sheet = [], {}
        for w in ("forget", "related", "unrelated"):
            if w in self._images:
                images, texts, _ = self._images[w]
                step = max(1, self._per_prompt(w))
                row, sheet[w] = images[::step][:width].clone(), texts[::step][:width]
                if w == "forget" and self.judge is not None:
                    flagged = self.judge.flags(row, self.concept).bool().cpu()
                    red = torch.tensor([1.0, 0.0, 0.0])[:, None]
                    row[flagged, :, 0, :] = row[flagged, :, -1, :] = red
                    row[flagged, :, :, 0] = row[flagged, :, :, -1] = red
                    sheet["flagged"] = flagged.tolist()
                rows.append(row)
        n = max(len(r) for r in rows)
        padded = [torch.cat([r, torch.ones(n - len(r), *r.shape[1:])]) for r in rows]
        return make_grid(torch.cat(padded), nrow=n, padding=1, pad_value=1.0), sheet

    def _per_prompt(self, which: str) -> int:
        return self.config.images_per_prompt if which == "forget" else self.config.benign_images_per_prompt
