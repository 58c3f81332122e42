"""SDXL end to end on the tiny random SDXL (``--model tiny-sdxl``): a grid runs, ``export`` writes pipelines that
diffusers' ``StableDiffusionXLPipeline.from_pretrained`` loads (the LoRA attack's adapter merged, or beside the
UNet), and ``checkpoint`` reads the exported SDXL UNet back with the scores the cell recorded."""

import pytest
import torch

from relearnbench.cli import main
from relearnbench.store import Store

SMALL = ["--model", "tiny-sdxl", "--concepts", "triangle", "--metrics", "asr,related", "--quiet",
         "--set", "sample.images_per_prompt=2", "--set", "sample.benign_images_per_prompt=1", "--set", "sample.steps=3"]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_sdxl_grid_export_and_checkpoint(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    run = tmp_path / "run"
    main(["run", *SMALL, "--methods", "uce", "--attacks", "lora", "--set", "lora.curve=[0,2]",
          "--set", "lora.lr=1e-2", "--set", "lora.images_per_prompt=2", "--out", str(run)])
    main(["export", str(run), "--method", "uce", "--attack", "lora", "--stage", "post", "--out", str(tmp_path / "merged")])
    main(["export", str(run), "--method", "uce", "--attack", "lora", "--stage", "post", "--lora", "adapter",
          "--out", str(tmp_path / "adapter")])
    pipe = StableDiffusionXLPipeline.from_pretrained(tmp_path / "merged", local_files_only=True)
    assert pipe.text_encoder_2 is not None and pipe.unet.config.addition_embed_type == "text_time"
    assert "StableDiffusionXLPipeline.from_pretrained" in (tmp_path / "merged" / "README.md").read_text()
    with_adapter = StableDiffusionXLPipeline.from_pretrained(tmp_path / "adapter", local_files_only=True)
    with_adapter.load_lora_weights(tmp_path / "adapter")  # the attack's adapter beside the unlearned UNet
    assert any("lora" in n for n, _ in with_adapter.unet.named_parameters())
    # the merged UNet, read back by checkpoint on the same base model, scores what the cell recorded after the attack
    main(["run", *SMALL, "--methods", "checkpoint", "--attacks", "none", "--set",
          f"checkpoint.path={tmp_path / 'merged'}", "--out", str(run)])
    df = Store(run).records_frame()
    post = df[(df["method"] == "uce") & (df["attack"] == "lora") & (df["stage"] == "post")]
    again = df[(df["method"] == "checkpoint") & (df["stage"] == "pre")]
    assert len(post) and dict(zip(post["metric"], post["value"])) == dict(zip(again["metric"], again["value"]))


def test_paper_sdxl_grid_dry_run(capsys):
    """The paper's SDXL setting: 4 concepts x esd-u-1 +/- meta x none, ft at 100 steps, each value with its source
    (ESD's from its authors' SDXL script, ft's 100 steps and meta's steps from their [sdxl] tables, the rest from
    the SD-1.4 presets), planned without loading a model."""
    main(["run", "--grid", "paper-sdxl", "--dry-run"])
    out = capsys.readouterr().out
    assert "16 cells = 1 models x 4 concepts x 2 methods x 2 attacks" in out
    for concept in ("spongebob", "snoopy", "thomas_kinkade", "kelly_mckernan"):
        assert f"sdxl/{concept}/esd-u-1+meta/ft/0" in out
    assert "steps = 200    <- methods/esd.toml [sdxl]" in out and "start_guidance = 2.0    <- methods/esd.toml [sdxl]" in out
    assert "curve = (0, 50, 100)    <- attacks/ft.toml [sdxl.ft]" in out
    assert "steps = 300    <- methods/meta.toml [sdxl]" in out
    assert "inner_batch = 10    <- methods/meta.toml [sd14]" in out  # no SDXL source: the authors' SD-1.4 one
