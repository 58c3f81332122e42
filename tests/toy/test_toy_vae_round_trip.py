"""Every method and attack trains on VAE latents of world images, so each prompt of a toy benchmark
concept must survive the toy VAE's round trip: the judge reads decode(encode(x)) as the prompt.

The toy VAE turns green checkered squares, triangles and crosses into dotted ones (13, 17 and 8 of
32 images read checkered), so `striped` no longer has "a green checkered square" among its benign
prompts: methods trained on latents of dotted-looking squares captioned checkered."""

import pytest
import torch

from relearnbench.concepts import load_concept
from relearnbench.data import images_for
from relearnbench.diffusion import decode_latents, encode_images
from relearnbench.registry import JUDGES
from relearnbench.toy.world import parse_prompt


@pytest.fixture(scope="module")
def toy():
    from relearnbench.models import ModelConfig, load_model

    return load_model("toy", ModelConfig())


def read_after_round_trip(toy, images: torch.Tensor) -> dict:
    """The toy judge's reading of decode(encode(images))."""
    with torch.no_grad():
        return JUDGES.get("toy")().predict(decode_latents(toy, encode_images(toy, images)))


@pytest.mark.parametrize("name", ["triangle", "striped"])
def test_concept_prompts_survive_the_toy_vae(name, toy):
    concept = load_concept(name)
    prompts = concept.forget_texts + list(concept.benign)
    images, captions = images_for(prompts, 16, concept, toy, ctx=None, seed=0)
    read = read_after_round_trip(toy, images)
    for k, prompt in enumerate(prompts):
        rows = range(k * 16, (k + 1) * 16)  # prompt-major; each caption names what was drawn
        ok = sum(all(read[a][i] == v for a, v in parse_prompt(captions[i]).items()) for i in rows)
        assert ok >= 13, f"{name}: {prompt!r} read right after the VAE round trip in {ok} of 16 images"


def test_the_check_catches_a_prompt_the_vae_spoils(toy):
    concept = load_concept("striped")
    images, _ = images_for(["a green checkered cross"], 16, concept, toy, ctx=None, seed=0)
    read = read_after_round_trip(toy, images)
    assert sum(p == "checkered" for p in read["pattern"]) < 13
