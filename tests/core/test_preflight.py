"""The preflight through the CLI: what would fail every cell stops the run first, as one block of lines
with exit code 2, and creates no run directory (a failed run would become "the newest run")."""

import json

import pytest
import torch

pytestmark = pytest.mark.usefixtures("fakes")  # the dummy method, attack and metric


def _refused(run_cli, cwd, *args):
    proc = run_cli("run", *args, cwd=cwd, env={"HF_HOME": str(cwd / ".." / "hf")})
    assert proc.returncode == 2, proc.stderr
    assert list(cwd.iterdir()) == [], "the preflight must create nothing"
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: the run cannot start"), proc.stderr
    return lines


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_on_a_cpu_machine_exits_2_creating_nothing(tmp_path, run_cli):
    lines = _refused(run_cli, tmp_path, "--device", "cuda")
    assert lines[1:] == [lines[1]] and "no CUDA GPU" in lines[1] and "--device cpu" in lines[1]


def test_fp16_on_the_cpu_is_refused(tmp_path, run_cli):
    lines = _refused(run_cli, tmp_path, "--dtype", "fp16", "--methods", "dummy", "--attacks", "dummy",
                     "--metrics", "dummy")
    assert "--dtype fp16 on the CPU" in lines[1] and "--device cuda" in lines[1]


def test_every_missing_file_is_listed_at_once(tmp_path, run_cli):
    """A folder without its configs, SD concepts on the toy model, CLIP and ResNet weights nowhere:
    all named in one block, each with where it goes and how to get it."""
    home = tmp_path / "home"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    folder = tmp_path / "half-model"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "config.json").write_text("{}")
    env = {"HOME": str(home), "HF_HOME": str(home / "hf"), "TORCH_HOME": str(home / "torch")}
    proc = run_cli("run", "--model", f"toy,{folder}", "--concepts", "church", "--methods", "none",
                   "--attacks", "none", "--metrics", "asr,clip", "--set", "clip.model=ViT-B-32",
                   "--set", "clip.pretrained=laion2b_s34b_b79k", cwd=cwd, env=env)
    assert proc.returncode == 2 and list(cwd.iterdir()) == []
    text = proc.stderr
    assert f"{folder}/vae/config.json is missing" in text
    assert f"{folder}/text_encoder/model.safetensors or " in text
    assert f"{folder}/unet/config.json" not in text  # present, so not listed
    assert "concept church is a Stable Diffusion concept" in text  # on the toy model
    assert "hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K open_clip_model.safetensors" in text
    assert f"no ResNet-50 weights at {home}/torch/hub/checkpoints/resnet50-0676ba61.pth" in text
    assert "huggingface-cli" not in text
    assert f"no ResNet-50 weights at {home}/torch/hub/checkpoints/resnet50-11ad3fa6.pth" in text  # sd14: V2
    # the header, 8 missing model files, fit, CLIP, ResNet-50 V1 (toy scale) and V2 (the folder, sd14 scale)
    assert len(text.strip().splitlines()) == 1 + 8 + 1 + 1 + 2


def test_a_hub_model_not_in_the_cache_names_hf_download(tmp_path, run_cli):
    lines = _refused(run_cli, tmp_path, "--model", "sd14", "--concepts", "church", "--methods", "none",
                     "--attacks", "none", "--metrics", "asr", "--set", "imagenet.path=" + __file__,
                     )  # ResNet weights "present": only the model is missing
    assert len(lines) == 2 and "`hf download CompVis/stable-diffusion-v1-4" in lines[1]


def test_toy_concept_on_sd_and_a_wrapper_without_steps(tmp_path, run_cli):
    folder = tmp_path / "sd"
    for f in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
              "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json", "text_encoder/model.safetensors",
              "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json"):
        (folder / f).parent.mkdir(parents=True, exist_ok=True)
        (folder / f).write_text(json.dumps({}))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # the toy scale's meta preset borrows steps and lr from its base; none has none to lend
    lines = _refused(run_cli, cwd, "--model", f"tiny,{folder}", "--concepts", "triangle", "--methods", "none+meta",
                     "--attacks", "none", "--metrics", "asr")
    assert len(lines) == 3
    assert "concept triangle belongs to the toy world" in lines[1]
    assert "none+meta: set meta.steps and meta.lr" in lines[2]
