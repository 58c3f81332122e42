"""A deterministic stand-in attack with no torch: a relearning curve of three points."""

from dataclasses import dataclass

from relearnbench.api import Attack


class Dummy(Attack):
    """deterministic fake attack for harness tests (no torch)"""

    @dataclass(frozen=True)
    class Config:
        steps: tuple[int, ...] = (0, 1, 2)  # curve points evaluated
        fail: bool = False  # raise during the attack, to exercise failure handling
        fail_seeds: tuple[int, ...] = ()  # raise only in cells with these seeds
        seconds: float = 0.0  # sleep this long per curve point, to exercise kill-and-resume

    config_name = "dummy_attack"
    needs_model = False

    def run(self, model, concept, ctx, evaluate):
        import time

        for step in self.config.steps:
            time.sleep(self.config.seconds)
            if (self.config.fail or ctx.seed in self.config.fail_seeds) and step > 0:
                raise RuntimeError("dummy attack failed on purpose (dummy_attack.fail=true)")
            evaluate(step, final=step == self.config.steps[-1])
