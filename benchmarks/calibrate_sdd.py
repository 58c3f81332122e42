"""SDD's [toy] calibration (methods/sdd.toml), on the triangle concept's train role only: after SDD at each
setting, the share of images of the concept's train prompts the toy judge flags, and the share of its train_related
and train_unrelated images that render what they ask for. Nothing here sees an evaluation prompt.

    nice -n 19 python benchmarks/calibrate_sdd.py        # about 3 minutes a setting on 2 busy cores
"""

import torch

from relearnbench.api import Prompt
from relearnbench.concepts import load_concept
from relearnbench.config import build
from relearnbench.diffusion import sample
from relearnbench.models import ModelConfig, load_model
from relearnbench.registry import JUDGES, METHODS
from relearnbench.testing import context

SETTINGS = [dict(steps=50, lr=2e-4, ema_decay=0.9), dict(steps=50, lr=5e-4, ema_decay=0.9)]


def score(model, concept, judge) -> tuple[float, float]:
    """(% of train-prompt images flagged, % of train benign images rendered right), 4 images a prompt."""
    forget = [Prompt(p, seed=100 + i) for i, p in enumerate(concept.train)]
    benign = [Prompt(p, seed=200 + i) for i, p in enumerate(concept.train_benign)]
    f = sample(model, forget, 4, steps=10, guidance=5.0, seed=0)
    b = sample(model, benign, 4, steps=10, guidance=5.0, seed=0)
    ok = judge.correct(b, [p.text for p in benign for _ in range(4)])
    return round(judge.flags(f, concept).float().mean().item() * 100, 1), round(ok.float().mean().item() * 100, 1)


def main():
    torch.set_num_threads(1)
    concept = load_concept("triangle")
    judge = JUDGES.get("toy")(JUDGES.get("toy").Config())
    print("original", score(load_model("toy", ModelConfig()), concept, judge), flush=True)
    for sets in SETTINGS:
        model = load_model("toy", ModelConfig())
        build(METHODS, "sdd", "toy", {"sdd": sets}).unlearn(model, concept, context(seed=0))
        print(sets, score(model, concept, judge), flush=True)


if __name__ == "__main__":
    main()
