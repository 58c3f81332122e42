"""Registry-driven: every registered metric scores an Evaluation of the tiny random model."""

import math

import pytest

from relearnbench.config import instantiate
from relearnbench.registry import METRICS
from relearnbench.testing import TINY_MODELS


@pytest.mark.parametrize("arch", TINY_MODELS)  # every metric on SD-1.x and SDXL alike
@pytest.mark.parametrize("name", METRICS.list())
def test_metric_computes_finite_scores(name, arch, tiny_evals, request):
    tiny_eval = tiny_evals(arch)
    cls = METRICS.get(name)
    if not cls.needs_model:
        pytest.skip(f"{name} is a torch-free harness stand-in")
    small = {"gradients": {"timesteps": [500], "batches": 1, "batch_size": 4}, "fid": {"reference_images": 200}}
    if name == "clip":
        small["clip"] = {"path": request.getfixturevalue("toy_clip_path")}
    metric = instantiate(cls, tiny_eval.model.preset, {cls.config_name: small.get(name, {})})
    scores = metric.compute(tiny_eval)
    assert scores and all(s.metric == name or s.metric.startswith(name + ".") for s in scores)
    for s in scores:
        assert math.isfinite(s.value) and s.n > 0, s
        if s.lo is not None:
            assert s.lo <= s.value <= s.hi, s
