"""Shared pieces of the method tests: tiny configs (a couple of steps on ``tiny_model()``) and a
builder that resolves a registry name the way the harness does."""

import pytest
import torch

from relearnbench.testing import context

# a couple of steps each, on a handful of images; a plugin missing here runs with its toy preset
TINY = {
    "esd": dict(steps=2, batch_size=2, ddim_steps=4, images=4),
    "sdd": dict(steps=2, batch_size=2, ddim_steps=4),
    "salun": dict(steps=2, batch_size=4, forget_images=8, retain_images=8),
    "uce": dict(),
    "ca": dict(steps=2, batch_size=2, images=4),
    "fmn": dict(steps=2, batch_size=2, images=4),
    "spm": dict(steps=2, ddim_steps=4, warmup=0),
    "advunlearn": dict(steps=3, warmup=1, attack_steps=2, ddim_steps=4, retain_batch=2),
    "erasediff": dict(steps=2, batch_size=2, forget_images=4, retain_images=4, inner_steps=1),
    "scissorhands": dict(steps=2, batch_size=2, forget_images=4, retain_images=4, snip_batches=2),
    "ablate": dict(steps=2, ddim_steps=4),  # tests/plugin_example's (400 steps at 20 DDIM steps otherwise)
    "meta": dict(steps=2, lr=1e-3, inner_steps=1, inner_batch=4, forget_images=8, retain_images=4, batch_size=4),
}


def _build(name: str, scale: str = "toy", **overrides):
    """The method registered as ``name`` (``esd-u-1+meta`` included) with the tiny configs;
    ``overrides`` are ``{namespace: {key: value}}`` on top of them."""
    from relearnbench.config import build
    from relearnbench.registry import METHODS

    sets = {ns: {**TINY.get(ns, {}), **overrides.get(ns, {})} for ns in {*TINY, *overrides}}
    return build(METHODS, name, scale, sets)


@pytest.fixture
def build():
    return _build


@pytest.fixture
def ctx():
    return context(seed=0)


def _unet_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.unet.state_dict().items()}


@pytest.fixture
def unet_state():
    """unet_state(model): a detached copy of the UNet's state dict."""
    return _unet_state


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models run fastest on one thread, and the machines these tests run on are shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
