"""The toy benchmark concepts' prompts must be data the toy world can carry.

* Every method and attack trains on VAE latents of world images, so each prompt must survive the toy
  VAE's round trip: the judge reads decode(encode(x)) as the prompt. The toy VAE turns green checkered
  squares, triangles and crosses into dotted ones (13, 17 and 8 of 32 images read checkered), so
  `striped` no longer has "a green checkered square" among its benign prompts.
* A benign prompt scores a method's collateral damage, so the original model must render it stably:
  read as right at the evaluation guidance and still at a slightly stronger one. The original model
  draws "a red checkered circle" with green dark cells, read red in 16 of 16 images at guidance 5 and in
  10 of 16 at 7; any method's small change tipped it, so `striped` no longer has it either."""

import pytest
import torch

from relearnbench.api import Prompt
from relearnbench.concepts import load_concept
from relearnbench.config import preset_file_layer
from relearnbench.data import images_for
from relearnbench.diffusion import decode_latents, encode_images, sample
from relearnbench.evaluate import SampleConfig
from relearnbench.registry import JUDGES


@pytest.fixture(scope="module")
def toy():
    from relearnbench.models import ModelConfig, load_model

    return load_model("toy", ModelConfig())


def right_after_round_trip(toy, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """Per image: does the toy judge read decode(encode(image)) as its caption?"""
    with torch.no_grad():
        return JUDGES.get("toy")().correct(decode_latents(toy, encode_images(toy, images)), captions)


@pytest.mark.parametrize("name", ["triangle", "striped"])
def test_concept_prompts_survive_the_toy_vae(name, toy):
    concept = load_concept(name)
    prompts = concept.forget_texts + list(concept.benign)
    images, captions = images_for(prompts, 16, concept, toy, ctx=None, seed=0)  # each caption names what was drawn
    right = right_after_round_trip(toy, images, captions).view(len(prompts), 16).sum(1)  # prompt-major
    for prompt, ok in zip(prompts, right.tolist()):
        assert ok >= 13, f"{name}: {prompt!r} read right after the VAE round trip in {ok} of 16 images"


def test_the_check_catches_a_prompt_the_vae_spoils(toy):
    concept = load_concept("striped")
    images, captions = images_for(["a green checkered cross"], 16, concept, toy, ctx=None, seed=0)
    assert int(right_after_round_trip(toy, images, captions).sum()) < 13


def read_right(toy, prompt: str, guidance: float) -> int:
    """Of 16 images the original model samples for ``prompt``, how many the judge reads as it."""
    steps = preset_file_layer(SampleConfig, "toy")["steps"]
    images = sample(toy, [Prompt(prompt)], 16, steps=steps, guidance=guidance, seed=1)
    return int(JUDGES.get("toy")().correct(images, [prompt] * 16).sum())


def renders_stably(toy, prompt: str) -> bool:
    """Read right in >= 12 of 16 at the evaluation guidance, and at guidance + 2 in no more than 2 fewer."""
    guidance = preset_file_layer(SampleConfig, "toy")["guidance"]
    at, above = read_right(toy, prompt, guidance), read_right(toy, prompt, guidance + 2)
    return at >= 12 and above >= at - 2


@pytest.mark.slow  # 65 s a concept on 2 cores; test_the_check_catches_a_prompt_rendered_on_an_edge stays fast
@pytest.mark.parametrize("name", ["triangle", "striped"])
def test_benign_prompts_are_rendered_stably_by_the_original_model(name, toy):
    unstable = [p for p in load_concept(name).benign if not renders_stably(toy, p)]
    assert not unstable, f"{name}: the original toy model does not render {unstable} stably"


def test_the_check_catches_a_prompt_rendered_on_an_edge(toy):
    assert not renders_stably(toy, "a red checkered circle")
