"""A method's [toy] calibration, on the triangle concept's train role only: after the method at a setting (its
``[toy]`` preset and the KEY=VALUEs given), the share of images of the concept's train prompts the toy judge flags,
and the share of its train_related and train_unrelated images that render what they ask for (4 images a prompt, 10
DDIM steps, guidance 5). Nothing here sees an evaluation prompt. The methods/*.toml `[toy]` comments cite it.

    nice -n 19 python benchmarks/calibrate.py original                     # the toy model before unlearning
    nice -n 19 python benchmarks/calibrate.py sdd steps=50 lr=5e-4 ema_decay=0.9
    nice -n 19 python benchmarks/calibrate.py advunlearn lr=3e-4
    nice -n 19 python benchmarks/calibrate.py scissorhands sparsity=0.99 lam=0.5
"""

import sys

import torch

from relearnbench.api import Prompt
from relearnbench.concepts import load_concept
from relearnbench.config import build, parse_value
from relearnbench.diffusion import sample
from relearnbench.models import ModelConfig, load_model
from relearnbench.registry import JUDGES, METHODS
from relearnbench.testing import context


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
    name, sets = sys.argv[1], {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in sys.argv[2:])}
    concept = load_concept("triangle")
    judge = JUDGES.get("toy")(JUDGES.get("toy").Config())
    model = load_model("toy", ModelConfig())
    if name != "original":
        method = build(METHODS, name, "toy", {METHODS.get(name).config_name: sets})
        # the defender's images come from the original model, as in a run (the context lends a fresh copy)
        method.unlearn(model, concept, context(seed=0, base=lambda: load_model("toy", ModelConfig())))
    print(name, sets, score(model, concept, judge), flush=True)


if __name__ == "__main__":
    main()
