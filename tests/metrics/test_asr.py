import numpy as np
import pytest

from relearnbench.api import Prompt
from relearnbench.metrics.asr import ASR
from relearnbench.metrics.stats import bootstrap_interval, mean_and_interval


def test_asr_with_real_judge_on_real_images(toy_judge, concept, real_eval, make_ctx):
    """A perfect generator of triangles leaks the concept every time; one that draws circles never does."""
    ctx = make_ctx(toy_judge)
    on = ASR().compute(real_eval(concept, ctx, "pre"))[0]
    off = ASR().compute(real_eval(concept, ctx, "post",
                                            forget_prompts=[Prompt("a circle"), Prompt("a striped square")]))[0]
    assert on.metric == "asr" and on.n == 16 and on.info["n_prompts"] == 2
    assert on.value >= 95 and off.value <= 5
    assert on.lo <= on.value <= on.hi and off.lo <= off.value <= off.hi
    assert on.info["judge"]["judge"] == "toy_judge"


def test_asr_interval_spans_mixed_prompts(toy_judge, concept, real_eval, make_ctx):
    """Half the prompts show the concept: the value is ~50 % and the interval is wide around it."""
    prompts = [Prompt(t) for t in ("a triangle", "a circle", "a red triangle", "a square", "a blue triangle",
                                   "a diamond")]
    score = ASR().compute(real_eval(concept, make_ctx(toy_judge), "x", forget_prompts=prompts))[0]
    assert 40 <= score.value <= 60
    assert score.lo < 35 and score.hi > 65
    per_prompt = score.info["per_prompt"]  # % of each prompt's 8 images flagged
    assert list(per_prompt) == [p.text for p in prompts]
    assert per_prompt["a triangle"] >= 87.5 and per_prompt["a circle"] <= 12.5


def _clustered(n_prompts, per_prompt, seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, n_prompts)  # prompts differ: some leak, some do not
    values = (rng.uniform(size=(n_prompts, per_prompt)) < p[:, None]).astype(float).ravel()
    groups = np.repeat(np.arange(n_prompts), per_prompt)
    return values, groups


def test_interval_width_shrinks_with_more_prompts():
    widths = []
    for n in (8, 32, 128, 512):
        lo, hi = bootstrap_interval(*_clustered(n, 4, seed=n), resamples=2000, seed=0)
        widths.append(hi - lo)
    assert all(a > b for a, b in zip(widths, widths[1:])), widths
    # about 1/√n: 64× the prompts, about 8× narrower
    assert 5 < widths[0] / widths[-1] < 12


def test_interval_is_over_prompts_not_images():
    """More images of the same prompts do not buy certainty about prompts that disagree."""
    values = np.array([1.0] * 50 + [0.0] * 50)
    two_prompts = bootstrap_interval(values, [0] * 50 + [1] * 50, seed=0)
    hundred_prompts = bootstrap_interval(values, list(range(100)), seed=0)
    assert two_prompts[1] - two_prompts[0] > 0.9  # {0, 0.5, 1}: nearly the whole range
    assert hundred_prompts[1] - hundred_prompts[0] < 0.3


def test_interval_deterministic_and_degenerate():
    v, g = _clustered(20, 3, seed=1)
    assert bootstrap_interval(v, g, seed=3) == bootstrap_interval(v, g, seed=3)
    assert bootstrap_interval([1.0, 0.0], [0, 0]) == (0.5, 0.5)  # one prompt: nothing to resample
    mean, lo, hi = mean_and_interval(v, g, scale=100)
    assert lo <= mean <= hi and mean == pytest.approx(100 * v.mean())
