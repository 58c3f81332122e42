"""AdvUnlearn's [toy] calibration (methods/advunlearn.toml), on the triangle concept's train role only: after
advunlearn at each setting, the share of images of the concept's train prompts the toy judge flags, and the share of
its train_related and train_unrelated images that render what they ask for (``calibrate_sdd.score``). Nothing here
sees an evaluation prompt.

    nice -n 19 python benchmarks/calibrate_advunlearn.py '{"lr": 1e-4}' '{"lr": 3e-4}'   # settings over [toy]
"""

import json
import sys
import time

import torch

from benchmarks.calibrate_sdd import score
from relearnbench.concepts import load_concept
from relearnbench.config import build
from relearnbench.models import ModelConfig, load_model
from relearnbench.registry import JUDGES, METHODS
from relearnbench.testing import context


def main():
    torch.set_num_threads(1)
    concept = load_concept("triangle")
    judge = JUDGES.get("toy")(JUDGES.get("toy").Config())
    print("original", score(load_model("toy", ModelConfig()), concept, judge), flush=True)
    for sets in map(json.loads, sys.argv[1:]):
        model, start = load_model("toy", ModelConfig()), time.perf_counter()
        build(METHODS, "advunlearn", "toy", {"advunlearn": sets}).unlearn(model, concept, context(seed=0))
        print(sets, score(model, concept, judge), f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
