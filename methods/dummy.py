"""A deterministic stand-in method with no torch: lets grid, resume, failures and tables be tested in seconds."""

from dataclasses import dataclass

from relearnbench.api import Method


class Dummy(Method):
    """deterministic fake method for harness tests (no torch)"""

    @dataclass(frozen=True)
    class Config:
        fail: bool = False  # raise during unlearning, to exercise failure handling
        seconds: float = 0.0  # sleep this long, to exercise kill-and-resume

    config_name = "dummy"
    needs_model = False

    def unlearn(self, model, concept, ctx):
        import time

        time.sleep(self.config.seconds)
        if self.config.fail:
            raise RuntimeError("dummy method failed on purpose (dummy.fail=true)")
