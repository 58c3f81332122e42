"""A deterministic stand-in metric with no torch: a value hashed from the cell and the stage."""

import hashlib

from relearnbench.api import Metric, Score


class Dummy(Metric):
    """deterministic fake score for harness tests (no torch)"""

    config_name = "dummy_metric"
    needs_model = False

    def compute(self, ev):
        key = repr(sorted(ev.cell.items())) + ev.stage
        value = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 16**8
        return [Score("dummy", value, lo=value - 0.05, hi=value + 0.05, n=10)]
