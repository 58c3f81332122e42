"""EraseDiff's and ScissorHands' [toy] calibration (methods/erasediff.toml, methods/scissorhands.toml), on the
triangle concept's train role only: after the method at a setting, the share of images of the concept's train
prompts the toy judge flags, and the share of its train_related and train_unrelated images that render what they
ask for (4 images a prompt, as benchmarks/calibrate_sdd.py). Nothing here sees an evaluation prompt.

    nice -n 19 python benchmarks/calibrate_erasediff_scissorhands.py original
    nice -n 19 python benchmarks/calibrate_erasediff_scissorhands.py erasediff lr=1e-4 steps=100
    nice -n 19 python benchmarks/calibrate_erasediff_scissorhands.py scissorhands sparsity=0.99 lam=0.5
"""

import ast
import sys

import torch

from relearnbench.concepts import load_concept
from relearnbench.config import build
from relearnbench.models import ModelConfig, load_model
from relearnbench.registry import JUDGES, METHODS
from relearnbench.testing import context

from calibrate_sdd import score  # the same score: this folder is on sys.path when a script in it runs


def value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main():
    torch.set_num_threads(1)
    name, sets = sys.argv[1], dict(kv.split("=", 1) for kv in sys.argv[2:])
    concept = load_concept("triangle")
    judge = JUDGES.get("toy")(JUDGES.get("toy").Config())
    model = load_model("toy", ModelConfig())
    if name != "original":
        method = build(METHODS, name, "toy", {name: {k: value(v) for k, v in sets.items()}})
        # the defender's images come from the original model, as in a run (the context lends a fresh copy)
        method.unlearn(model, concept, context(seed=0, base=lambda: load_model("toy", ModelConfig())))
    print(name, sets, score(model, concept, judge), flush=True)


if __name__ == "__main__":
    main()
