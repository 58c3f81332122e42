from dataclasses import dataclass

import pytest

from relearnbench.config import make_config, parse_sets
from relearnbench.errors import UserError


@dataclass(frozen=True)
class C:
    lr: float = 1e-3  # learning rate
    steps: int = 10  # steps
    train: str = "u"  # which params
    curve: tuple[int, ...] = (0, 5)  # eval points
    flag: bool = False  # a switch


def test_layers_apply_in_order_and_coerce():
    c = make_config(C, "x", {"lr": 1}, {"steps": 3}, parse_sets(["x.curve=[0,2,4]", "x.lr=5e-5"])["x"])
    assert c == C(lr=5e-5, steps=3, curve=(0, 2, 4))
    assert isinstance(c.lr, float)


def test_unknown_key_names_it():
    with pytest.raises(UserError, match=r"unknown config key x\.stpes.*did you mean steps"):
        make_config(C, "x", {"stpes": 3})


@pytest.mark.parametrize("key,value,expected", [("steps", "ten", "int"), ("flag", "3", "bool"),
                                                ("lr", "fast", "float")])
def test_bad_value_names_path_and_type(key, value, expected):
    with pytest.raises(UserError, match=rf"x\.{key}: expected {expected}"):
        make_config(C, "x", parse_sets([f"x.{key}={value}"])["x"])


@pytest.mark.parametrize("item", ["esd", "esd.lr", "=3", ".lr=3"])
def test_malformed_set(item):
    with pytest.raises(UserError, match="malformed --set"):
        parse_sets([item])
