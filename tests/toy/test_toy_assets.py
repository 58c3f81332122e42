"""The shipped toy assets: intact, loadable, and as good as their manifest says."""

import json
import pathlib

import pytest
import torch

from relearnbench.toy import world
from relearnbench.toy.build import RECIPES, recipe_hash, sha256

ASSETS = pathlib.Path(__file__).resolve().parents[2] / "relearnbench" / "toy" / "assets"
pytestmark = pytest.mark.skipif(not (ASSETS / "manifest.json").exists(),
                                reason="toy assets not built (relearnbench toy build)")


@pytest.fixture(scope="module")
def manifest():
    return json.loads((ASSETS / "manifest.json").read_text())


def test_manifest_hashes_every_file(manifest):
    on_disk = {p.relative_to(ASSETS).as_posix() for p in ASSETS.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for name, digest in manifest["files"].items():
        assert sha256(ASSETS / name) == digest, name


def test_assets_were_built_by_this_recipe(manifest):
    """Any change to the recipe or the build code changes the hash: rebuild (and recalibrate the presets)."""
    assert manifest["recipe"] == RECIPES["full"]
    assert manifest["recipe_hash"] == recipe_hash(RECIPES["full"])


def test_assets_fit_the_size_budget(manifest):
    assert manifest["total_bytes"] == sum((ASSETS / f).stat().st_size for f in manifest["files"])
    assert manifest["total_bytes"] <= 30 * 2**20


def test_manifest_meets_the_validation_targets(manifest):
    v = manifest["validation"]
    assert min(v["judge_accuracy"].values()) >= 0.98
    assert min(v["forget_concept_rate"].values()) >= 0.90
    assert min(v["clip_zero_shot_accuracy"][a] for a in ("shape", "pattern")) >= 0.90


def test_manifest_meets_the_benign_target(manifest):
    assert manifest["validation"]["benign_correct"] >= 0.85


def test_judge_is_accurate_on_fresh_real_images():
    from relearnbench.toy.judge import load_judge

    net = load_judge(ASSETS / "judge")
    images, labels = world.render_dataset(400, seed=12345)
    pred = net.predict(images.float() / 255)
    for a in world.ATTRIBUTES:
        assert float((pred[a] == labels[a]).float().mean()) >= 0.98, a
    assert net.features(images[:4].float() / 255).shape == (4, net.feature_dim)


def test_clip_loads_offline_and_reads_the_world():
    from relearnbench.toy.clip import load_clip, zero_shot_accuracy

    model, preprocess, tokenizer = load_clip(ASSETS / "clip")
    assert tokenizer(["a red triangle"]).shape == (1, 77)
    images, labels = world.render_dataset(200, seed=54321)
    acc = zero_shot_accuracy(model, tokenizer, images.float() / 255, labels)
    assert acc["shape"] >= 0.9 and acc["pattern"] >= 0.9
    from PIL import Image

    pil = Image.fromarray(images[0].permute(1, 2, 0).numpy())
    assert preprocess(pil).shape == (3, 32, 32)


def test_model_loads_as_a_stable_diffusion_pipeline_and_draws_triangles():
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from relearnbench.toy.judge import load_judge

    pipe = StableDiffusionPipeline.from_pretrained(ASSETS / "model", safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.tokenizer("a triangle").input_ids == [49406, 320, 14615, 49407]
    images = pipe(["a red triangle"] * 8, num_inference_steps=20, guidance_scale=5.0, output_type="pt",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (8, 3, 32, 32)
    pred = load_judge(ASSETS / "judge").predict(images)
    assert int((pred["shape"] == world.SHAPES.index("triangle")).sum()) >= 6
