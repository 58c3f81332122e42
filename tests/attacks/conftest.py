"""Shared pieces of the attack tests: a tiny model, a toy concept, a judge, a recording evaluate()."""

import pytest
import torch

from relearnbench.api import Concept, Context, Judge, Prompt
from relearnbench.data import GenerateConfig
from relearnbench.evaluate import SampleConfig

# Tiny convolutions spend their time in thread hand-offs when the 2 cores are shared: 1 thread
# runs these tests ~10x faster here
torch.set_num_threads(1)


class BrightnessJudge(Judge):
    """Test helper, not a plugin: flags an image whose mean intensity exceeds ``threshold``.
    A tiny random model draws no concept, so the tests pick the threshold to get the outcome
    they need (−1: every image is flagged, 2: none is) from a real statistic of the images."""

    config_name = "brightness_test_judge"

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold
        self.images = 0  # how many images the attack had judged

    def flags(self, images, concept):
        self.images += len(images)
        return images.float().mean((1, 2, 3)) > self.threshold


class Recorder:
    """An evaluate() callback that records each call as the executor would see it."""

    def __init__(self, model=None, probe=None):
        self.calls = []  # (step, forget_prompts)
        self.finals = []  # the final= flag of each call
        self.images = []  # the images= a probe handed over at each call (None if it did not)
        self.model, self.probe = model, probe
        self.probes = []  # probe(model) at each call

    def __call__(self, step=None, forget_prompts=None, final=True, images=None):
        self.calls.append((step, None if forget_prompts is None else list(forget_prompts)))
        self.finals.append(final)
        self.images.append(images)
        if self.probe is not None:
            self.probes.append(self.probe(self.model))


@pytest.fixture
def concept():
    """The tiny toy concept (real procedural attack data), one eval prompt with its own seed and guidance."""
    return Concept(name="triangle", description="test concept",
                   forget=(Prompt("a triangle", seed=7, guidance=3.0), Prompt("a red triangle")),
                   related=("a diamond", "a red diamond"), unrelated=("a circle",), judge="toy",
                   target={"attribute": "shape", "value": "triangle"}, attack_data="world",
                   anchor="a shape", fid_reference="world", train=("a blue triangle",), train_data="world",
                   attack=("a green triangle", "a dotted triangle"), attack_related=("a yellow diamond",),
                   attack_unrelated=("a cross",))


def _make_ctx(judge=None, seed=0) -> Context:
    torch.manual_seed(seed)
    return Context(device="cpu", dtype=torch.float32, seed=seed, judge=judge or BrightnessJudge(2.0),
                   sample_config=SampleConfig(images_per_prompt=2, benign_images_per_prompt=1, steps=2,
                                              guidance=3.0, batch_size=8),
                   generate_config=GenerateConfig(steps=2, guidance=3.0, batch_size=8))


# small budgets per attack so each runs in about a second on the tiny model; an attack missing
# here runs with its toy preset
TINY = {
    "ft": dict(curve=[0, 1, 3], batch_size=2, images_per_prompt=2, lr=1e-3),
    "ft_clean": dict(curve=[0, 2], batch_size=2, images_per_prompt=2, lr=1e-3),
    "ft_one": dict(curve=[0, 2], batch_size=2, images_per_prompt=2, lr=1e-3),
    "ft_adaptive": dict(curve=[0, 1, 2], batch_size=2, images_per_prompt=2, lr=1e-3),
    "lora": dict(curve=[0, 2, 4], batch_size=2, images_per_prompt=2, lr=1e-2),
    "unlearndiffatk": dict(k=2, timesteps=2, iterations=2),
    "p4d": dict(iterations=2, eval_step=1),
    "p4d-k": dict(iterations=2, eval_step=1),
    "ringabell": dict(population=8, generations=3),
    "ci": dict(steps=3, batch_size=2, images_per_prompt=2, init_word="shape"),
    "noising": dict(curve=[0, 500]),
    "noising_benign": dict(curve=[0, 500]),
    "completion": dict(curve=[0, 500]),
    "completion_benign": dict(curve=[0, 500]),
    "inpaint": dict(curve=[0, 500]),
    "inpaint_benign": dict(curve=[0, 500]),
}


def _build(name, **overrides):
    from relearnbench.config import instantiate
    from relearnbench.registry import ATTACKS

    cls = ATTACKS.get(name)
    return instantiate(cls, "toy", {cls.config_name: {**TINY.get(name, {}), **overrides}}, ATTACKS.meta(name).get("preset"))


@pytest.fixture
def make_ctx():
    """make_ctx(judge=None, seed=0): a hand-built Context; the default judge flags nothing."""
    return _make_ctx


@pytest.fixture
def build():
    """build(name, **overrides): the attack with its toy preset, the tiny budget and ``overrides``."""
    return _build


@pytest.fixture
def judge():
    """judge(threshold): a BrightnessJudge."""
    return BrightnessJudge


@pytest.fixture
def recorder():
    """recorder(model=None, probe=None): a Recorder."""
    return Recorder


@torch.no_grad()
def _denoising_loss(model, images, captions, repeats=4, seed=123):
    """L_DM (ε-prediction MSE) of the model as it is (an adapter or a learned word included) on images and their
    captions, with fixed noise and timesteps, written with the diffusers components alone: two models, or one
    model at two points of an attack, are compared on exactly the same terms."""
    vae, tok = model.vae, model.tokenizer
    x0 = vae.encode(images * 2 - 1).latent_dist.mean * vae.config.scaling_factor
    ids = tok(list(captions), padding="max_length", truncation=True, max_length=tok.model_max_length,
              return_tensors="pt").input_ids
    c = model.text_encoder(ids)[0]
    g, total = torch.Generator().manual_seed(seed), 0.0
    for _ in range(repeats):
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, model.scheduler.config.num_train_timesteps, (len(x0),), generator=g)
        pred = model.unet(model.scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=c).sample
        total += float(((pred - noise) ** 2).mean())
    return total / repeats


@pytest.fixture
def denoising_loss():
    """denoising_loss(model, images, captions): L_DM with fixed noise and timesteps (see _denoising_loss)."""
    return _denoising_loss
