"""Shared pieces of the metric tests: the shipped toy judge and CLIP, real world images, and an
Evaluation of the tiny random model sampled once for the whole folder."""

import os
import pathlib
from types import SimpleNamespace

import pytest
import torch

from relearnbench.api import Context
from relearnbench.data import GenerateConfig
from relearnbench.evaluate import Evaluation, SampleConfig

# the shipped assets, or another build's (`relearnbench toy build --out DIR`) through this variable
ASSETS = pathlib.Path(os.environ.get("RELEARNBENCH_TEST_TOY_ASSETS")
                      or pathlib.Path(__file__).resolve().parents[2] / "relearnbench" / "toy" / "assets")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests are small: intra-op threads only add overhead, and on a shared 2-core machine
    they spin against other processes (a 0.2 M-parameter UNet gradient: 8 s with 2 threads under
    load, 0.08 s with 1). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _need(sub: str) -> pathlib.Path:
    folder = ASSETS / sub
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.pt")):
        pytest.skip(f"toy {sub} not built at {folder} (relearnbench toy build)")
    return folder


@pytest.fixture(scope="session")
def toy_judge():
    from relearnbench.metrics.judges import ToyJudge

    return ToyJudge(ToyJudge.Config(path=str(_need("judge"))))


@pytest.fixture(scope="session")
def toy_clip_path():
    return str(_need("clip"))


@pytest.fixture(scope="session")
def concept():
    from relearnbench.testing import tiny_concept

    return tiny_concept()


def _world_images(prompts, n, seed=0):
    """Real rendered images of each prompt, grouped by prompt; with texts and prompt indices."""
    from relearnbench.toy.world import sample_images

    images, _ = sample_images(list(prompts), n, seed)
    return images, [p for p in prompts for _ in range(n)], [i for i in range(len(prompts)) for _ in range(n)]


class _RealImageEvaluation(Evaluation):
    """An Evaluation whose "sampled" images are real world renders of the prompts instead of a
    model's samples: what a perfect generator would give, so metric values can be checked."""

    def __init__(self, concept, ctx, stage="pre", images_per_prompt=8, **kwargs):
        # no model draws these images; metrics ask a model only for its resolution and device
        renderer = SimpleNamespace(resolution=32, unet=SimpleNamespace(device=torch.device("cpu")))
        super().__init__(renderer, concept, ctx, stage, **kwargs)
        self.n = images_per_prompt

    def images(self, which):
        if which == "benign":
            return super().images(which)  # related + unrelated, as the real one
        if which not in self._images:
            prompts = [p.text for p in self.prompts(which)]
            self._images[which] = _world_images(prompts, self.n, seed=len(self._images) + 1)
        return self._images[which]


def _make_ctx(judge, seed=0):
    return Context(device="cpu", dtype=torch.float32, seed=seed, judge=judge,
                   sample_config=SampleConfig(images_per_prompt=3, benign_images_per_prompt=3, steps=3,
                                              guidance=3.0, batch_size=16),
                   generate_config=GenerateConfig(steps=3, guidance=3.0, batch_size=16))


@pytest.fixture(scope="session")
def tiny_eval(toy_judge, concept):
    """One Evaluation of the tiny random model; its images are sampled once and shared."""
    from relearnbench.testing import tiny_model

    return Evaluation(tiny_model(), concept, _make_ctx(toy_judge), "pre")


@pytest.fixture(scope="session")
def tiny_evals(toy_judge, concept):
    """tiny_evals(arch): one Evaluation of each tiny random model (relearnbench.testing.TINY_MODELS), sampled once."""
    from relearnbench.testing import TINY_MODELS

    made = {}

    def of(arch):
        if arch not in made:
            made[arch] = Evaluation(TINY_MODELS[arch](), concept, _make_ctx(toy_judge), "pre")
        return made[arch]
    return of


@pytest.fixture(scope="session")
def world_images():
    """world_images(prompts, n, seed=0) -> (images, texts, prompt index): real renders."""
    return _world_images


@pytest.fixture(scope="session")
def real_eval():
    """The Evaluation class whose images are real renders: real_eval(concept, ctx, stage, ...)."""
    return _RealImageEvaluation


@pytest.fixture(scope="session")
def make_ctx():
    """make_ctx(judge, seed=0): a hand-built Context with a small sampler."""
    return _make_ctx
