"""SPM's [toy] calibration (methods/spm.toml), on the triangle concept's train role only, scored as SDD's
(benchmarks/calibrate_sdd.py): the share of images of the concept's train prompts the toy judge flags, and the share
of its train_related and train_unrelated images that render what they ask for. Nothing here sees an evaluation prompt.

    nice -n 10 python benchmarks/calibrate_spm.py [KEY=VALUE,KEY=VALUE ...]   # spm.* over the [toy] preset
"""

import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from calibrate_sdd import score  # noqa: E402

from relearnbench.concepts import load_concept  # noqa: E402
from relearnbench.config import build, parse_value  # noqa: E402
from relearnbench.models import ModelConfig, load_model  # noqa: E402
from relearnbench.registry import JUDGES, METHODS  # noqa: E402
from relearnbench.testing import context  # noqa: E402


def main(settings: list[str]):
    torch.set_num_threads(1)
    concept = load_concept("triangle")
    judge = JUDGES.get("toy")(JUDGES.get("toy").Config())
    if not settings:
        print("original", score(load_model("toy", ModelConfig()), concept, judge), flush=True)
    for setting in settings or [""]:
        sets = dict(kv.split("=", 1) for kv in setting.split(",") if kv)
        model = load_model("toy", ModelConfig())
        build(METHODS, "spm", "toy", {"spm": {k: parse_value(v) for k, v in sets.items()}}).unlearn(
            model, concept, context(seed=0))
        print(setting or "[toy]", score(model, concept, judge), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
