import json

import open_clip
import pytest
from transformers import CLIPTokenizer

from relearnbench.toy.tokenizer import write_sd_tokenizer

PROMPTS = [
    "a red striped triangle",
    "A Photo of a TRIANGLE, in the style of Van Gogh!!",
    "nude woman on a beach, 4k, highly detailed",
    "an   image of\ta   checkered   garbage truck",
    "café über naïve résumé",
    "x" * 300,  # longer than 77 tokens: both truncate and end with <|endoftext|>
]


@pytest.fixture(scope="module")
def sd_tokenizer(tmp_path_factory):
    return CLIPTokenizer.from_pretrained(write_sd_tokenizer(tmp_path_factory.mktemp("tok")))


def test_files_have_clip_sizes(tmp_path):
    d = write_sd_tokenizer(tmp_path)
    assert len(json.loads((d / "vocab.json").read_text())) == 49408
    lines = (d / "merges.txt").read_text().splitlines()
    assert lines[0] == "#version: 0.2" and len(lines) == 1 + 48894


def test_special_ids_are_stable_diffusion_1s(sd_tokenizer):
    assert (sd_tokenizer.bos_token_id, sd_tokenizer.eos_token_id, sd_tokenizer.pad_token_id) == (49406, 49407, 49407)
    assert sd_tokenizer.model_max_length == 77


@pytest.mark.parametrize("prompt", PROMPTS)
def test_ids_match_open_clip(sd_tokenizer, prompt):
    ours = sd_tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
    theirs = open_clip.tokenize([prompt])[0].tolist()
    end = theirs.index(49407) + 1
    assert ours[:end] == theirs[:end]
    # open_clip pads with 0; SD-1.x pads with <|endoftext|>
    assert ours[end:] == [49407] * (77 - end)
    assert len(ours) == 77
