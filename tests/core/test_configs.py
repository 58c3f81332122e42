"""Every field of every plugin's Config (and of the core's sample and model configs) carries a
one-line comment saying what it is: the --set reference is read from these comments."""

import dataclasses

import pytest

from relearnbench.evaluate import SampleConfig
from relearnbench.models import ModelConfig
from relearnbench.registry import REGISTRIES
from relearnbench.show import field_comments


def configs():
    out = {"sample": SampleConfig, "model": ModelConfig}
    for kind, registry in REGISTRIES.items():
        for name in registry.list():
            cls = registry.get(name)
            if isinstance(cls, type) and dataclasses.is_dataclass(getattr(cls, "Config", None)):
                out[f"{kind}/{name}"] = cls.Config
        for suffix in registry.suffixes():
            cls, _ = registry.wrapper(suffix)
            out[f"{kind}/+{suffix}"] = cls.Config
    return out


def commented(config) -> set[str]:
    """Fields with a comment at the end of their line or on the line above, in the class or a base:
    what ``relearnbench show`` prints beside each key."""
    return set(field_comments(config))


@pytest.mark.parametrize("name,config", sorted(configs().items()))
def test_every_config_field_has_a_comment(name, config):
    assert [f.name for f in dataclasses.fields(config) if f.name not in commented(config)] == []


def test_a_silent_field_is_seen():
    @dataclasses.dataclass
    class Config:
        lr: float = 1e-5  # learning rate
        steps: int = 10

    assert commented(Config) == {"lr"}
