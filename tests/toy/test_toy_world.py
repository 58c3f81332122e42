
import numpy as np
import pytest
import torch

from relearnbench.concepts import load_concept
from relearnbench.toy import world
from relearnbench.toy.concepts import ERASABLE


def test_render_is_uint8_32px_and_seeded():
    a = world.render("triangle", "red", "striped", np.random.default_rng(3))
    b = world.render("triangle", "red", "striped", np.random.default_rng(3))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)


def test_shape_colour_pattern_change_the_picture():
    def img(**kw):
        attrs = {"shape": "square", "colour": "blue", "pattern": "plain", **kw}
        return world.render(attrs["shape"], attrs["colour"], attrs["pattern"], np.random.default_rng(0)).astype(int)

    base = img()
    for change in ({"shape": "triangle"}, {"colour": "red"}, {"pattern": "striped"}):
        assert np.abs(img(**change) - base).sum() > 5000, change


def test_caption_and_parse_prompt_round_trip():
    for s in world.SHAPES:
        for c in world.COLOURS:
            for p in world.PATTERNS:
                assert world.parse_prompt(world.caption(s, c, p)) == {"shape": s, "colour": c, "pattern": p}
    assert world.caption("triangle", "red", "striped") == "a red striped triangle"
    assert world.caption("triangle", "red", "plain") == "a plain red triangle"
    assert world.parse_prompt("a photo of a triangle") == {"shape": "triangle"}
    assert world.parse_prompt("Two TRIANGLES with stripes") == {"shape": "triangle", "pattern": "striped"}
    assert world.parse_prompt("a cat on a mat") == {}


def test_random_caption_names_a_true_subset():
    rng = np.random.default_rng(0)
    attrs = {"shape": "diamond", "colour": "yellow", "pattern": "dotted"}
    seen = set()
    for _ in range(200):
        named = world.parse_prompt(world.random_caption(attrs, rng))
        assert named and all(attrs[a] == v for a, v in named.items())
        seen.add(tuple(sorted(named)))
    assert len(seen) == 7  # every non-empty subset occurs


def test_sample_images_follow_the_prompts_and_the_seed():
    x, captions = world.sample_images(["a triangle", "a blue striped square"], 5, seed=1)
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert all(world.parse_prompt(c)["shape"] == "triangle" for c in captions[:5])
    assert all(world.parse_prompt(c) == {"shape": "square", "colour": "blue", "pattern": "striped"}
               for c in captions[5:])
    assert len({world.parse_prompt(c)["colour"] for c in captions[:5]}) > 1  # unnamed ones vary
    y, _ = world.sample_images(["a triangle", "a blue striped square"], 5, seed=1)
    assert torch.equal(x, y)


def test_sample_images_rejects_a_prompt_outside_the_world():
    with pytest.raises(ValueError, match="names no attribute"):
        world.sample_images(["a cat"], 1, seed=0)


def test_render_dataset_is_balanced():
    images, labels = world.render_dataset(200, seed=0)
    assert images.shape == (200, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.bincount(labels["pattern"]).tolist() == [50] * 4


@pytest.mark.parametrize("name", sorted(ERASABLE))
def test_toy_concepts_are_well_formed(name):
    """relearnbench/concepts/NAME.toml defines each toy concept: every forget prompt shows the target value, no
    benign prompt does, all are prompts of the world. The build's validation set (toy/concepts.py, hashed
    into the shipped assets' recipe) checks the same attribute values."""
    c = load_concept(name)
    attr, value = c.target["attribute"], c.target["value"]
    assert (ERASABLE[name]["attribute"], ERASABLE[name]["value"]) == (attr, value)
    assert (c.judge, c.attack_data) == ("toy", "world") and value in world.ATTRIBUTES[attr]
    assert all(world.parse_prompt(p).get(attr) == value for p in c.forget_texts)
    for p in c.benign:
        assert world.parse_prompt(p) and world.parse_prompt(p).get(attr) != value, p
