"""A shortened build, end to end: the same folder structure as the shipped assets, loadable."""

import json

import pytest
import torch

from relearnbench.toy.build import RECIPES, build, sha256

# the quick recipe cut to 3 steps a stage and one validation sample a prompt: these tests check the folder a build
# writes, not the world it learns (build.py's bytes enter the shipped assets' recipe hash, so the cut lives here)
SMALLER = dict(n_train=128, n_val=64, judge_steps=3, vae_steps=3, unet_steps=3, unet_batch=8, clip_steps=3,
               clip_batch=16, val_per_prompt=1, grid_per_prompt=1)


def small_build(out):
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(RECIPES, "quick", {**RECIPES["quick"], **SMALLER})
        return build(out, quick=True, progress=False)


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    return out, small_build(out)


def test_quick_build_writes_every_part_with_a_manifest(quick_build):
    out, summary = quick_build
    for part in ("model/model_index.json", "model/unet", "model/vae", "model/text_encoder", "model/tokenizer",
                 "model/scheduler", "judge/config.json", "clip/open_clip_config.json", "samples.png"):
        assert (out / part).exists(), part
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == json.loads(json.dumps(summary))
    assert len(manifest["recipe_hash"]) == 64 and manifest["recipe"]["unet_steps"] < 100
    assert {f for f in manifest["files"]} >= {"samples.png", "judge/judge.safetensors",
                                              "clip/open_clip_model.safetensors"}
    for name, digest in manifest["files"].items():
        assert sha256(out / name) == digest
    v = manifest["validation"]
    assert set(v["forget_concept_rate"]) == {"triangle", "striped"}
    assert set(v["judge_accuracy"]) == {"shape", "colour", "pattern"}
    assert set(manifest["seconds"]) >= {"judge", "autoencoder", "unet + text encoder", "clip", "total"}


def test_quick_model_loads_with_stable_diffusion_pipeline(quick_build):
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    out, _ = quick_build
    pipe = StableDiffusionPipeline.from_pretrained(out / "model", safety_checker=None)
    assert isinstance(pipe.scheduler, DDPMScheduler)
    assert pipe.tokenizer.pad_token_id == 49407 and pipe.text_encoder.config.vocab_size == 49408
    pipe.set_progress_bar_config(disable=True)
    images = pipe(["a striped triangle", ""], num_inference_steps=3, guidance_scale=5.0, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 32, 32, 3)


@pytest.mark.slow
def test_build_is_reproducible(quick_build, tmp_path):
    _, first = quick_build
    second = small_build(tmp_path)
    assert second["files"] == first["files"]
    assert second["recipe_hash"] == first["recipe_hash"]


@pytest.mark.parametrize("args,message", [
    ((), "would overwrite the shipped assets"),
    (("--quick",), "never into the package"),
    (("--quick", "--force"), "never into the package"),
    (("--quick", "--out", "relearnbench/toy/assets/quick"), "never into the package"),
])
def test_build_never_overwrites_the_shipped_assets_by_accident(run_cli, args, message):
    """`toy build` refuses before any work; the shipped manifest is untouched."""
    from relearnbench.toy import TOY_DIR

    before = (TOY_DIR / "manifest.json").read_bytes()
    proc = run_cli("toy", "build", *args, cwd=TOY_DIR.parents[2])
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert (TOY_DIR / "manifest.json").read_bytes() == before
    assert not (TOY_DIR / "quick").exists()
