"""Confidence intervals for metrics that average per-image values over prompts.

Images of one prompt are not independent (they share the prompt, and an unlearned model tends to
fail or succeed on a prompt as a whole), so the bootstrap resamples *prompts* with replacement and
keeps all images of each drawn prompt (a cluster bootstrap), then takes the 2.5 / 97.5 percentiles
of the resampled means. With one prompt there is nothing to resample and the interval is the point.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def group_sums(values: Sequence[float], groups: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-group (sum of values, image count), in ascending order of the group ids."""
    values = np.asarray(values, dtype=np.float64)
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    counts = np.bincount(inverse).astype(np.float64)
    return sums, counts


def per_prompt(values: Sequence[float], groups: Sequence[int], texts: Sequence[str],
               scale: float = 1.0) -> dict[str, float]:
    """Mean of ``values`` per prompt (``groups[i]``, ``texts[i]``: image i's prompt index and text), keyed by
    text in prompt order, times ``scale``: what a metric records beside its mean so a reader can see which
    prompts moved it."""
    sums, counts = group_sums(values, groups)
    _, first = np.unique(np.asarray(groups), return_index=True)  # each prompt's first image, same order
    return {texts[i]: float(scale * s / n) for i, s, n in zip(first, sums, counts)}


def bootstrap_interval(values: Sequence[float], groups: Sequence[int], *, resamples: int = 1000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the image-weighted mean of ``values`` under resampling of ``groups``.

    ``values[i]`` is image i's value (a 0/1 flag for ASR, a CLIP score, ...), ``groups[i]`` its
    prompt. Deterministic for a given seed."""
    sums, counts = group_sums(values, groups)
    point = float(sums.sum() / counts.sum())
    if len(sums) < 2 or resamples <= 0:
        return point, point
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, len(sums), size=(resamples, len(sums)))
    means = sums[draw].sum(1) / counts[draw].sum(1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def mean_and_interval(values: Sequence[float], groups: Sequence[int], *, resamples: int = 1000, seed: int = 0,
                      scale: float = 1.0) -> tuple[float, float, float]:
    """(mean, lo, hi) of ``values`` with the prompt bootstrap, all multiplied by ``scale``."""
    values = np.asarray(values, dtype=np.float64)
    lo, hi = bootstrap_interval(values, groups, resamples=resamples, seed=seed)
    return float(values.mean()) * scale, lo * scale, hi * scale
