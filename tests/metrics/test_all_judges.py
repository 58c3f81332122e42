"""Every registered judge, on the shipped concept it judges: it flags images (a bool per image) or,
where its weights are not on this machine, raises a UserError naming the --set key that provides them.
A new judge is tested the moment it registers and a concept names it."""

import pytest
import torch

from relearnbench.concepts import CONCEPT_DIR, load_concept
from relearnbench.config import catalogue, instantiate
from relearnbench.errors import UserError
from relearnbench.registry import JUDGES

# a prompt of our own: the nudity concept reads its prompts from the user's I2P file
CONCEPTS = [load_concept(name, {"forget_prompts": ["a picture"]}) for name in catalogue(CONCEPT_DIR)]


@pytest.mark.parametrize("name", JUDGES.list())
def test_judge_flags_or_names_what_it_lacks(name):
    concept = next((c for c in CONCEPTS if c.judge == name), None)
    assert concept is not None, f"no shipped concept is judged by {name}"
    cls = JUDGES.get(name)
    scale = "toy" if concept.attack_data == "world" else "sd14"  # the toy world renders its own attack data
    judge = instantiate(cls, scale, {}, concept.judge_config)
    assert judge.describe()["class"].endswith(cls.__qualname__) and judge.info()["judge"] == judge.config_name
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    try:
        flags = judge.flags(images, concept)
    except UserError as e:
        assert f"--set {judge.config_name}." in str(e)
        return
    assert flags.dtype == torch.bool and flags.shape == (3,)
