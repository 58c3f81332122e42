"""``relearnbench export`` and the ``checkpoint`` method, round trip: unlearn a toy concept, export the
cell as a diffusers pipeline, load it back (as the folder, as its UNet state dict, as a CompVis
single file; advunlearn's trained text encoder with the folder and alone)
with ``checkpoint`` and score it: every ASR and judge score equals the original cell's.
Bad paths and mismatched checkpoints are one-line errors from the CLI."""

import json
import pathlib
import tomllib

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from relearnbench.cli import main
from relearnbench.store import Store

SMALL = ["--concepts", "triangle", "--metrics", "asr,related", "--set", "sample.images_per_prompt=2",
         "--set", "sample.benign_images_per_prompt=2", "--set", "sample.steps=5", "--quiet"]


def scores(run, method, stage="pre"):
    """{metric: (value, lo, hi, n, per-prompt figures)} of a method's cell at ``stage``."""
    df = Store(run).records_frame()
    df = df[(df["method"] == method) & (df["stage"] == stage)]
    return {r.metric: (r.value, r.lo, r.hi, r.n, json.loads(r.info).get("per_prompt")) for r in df.itertuples()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A toy run of UCE on triangle, and its cell exported."""
    tmp = tmp_path_factory.mktemp("export")
    main(["run", "--methods", "uce", "--attacks", "none", *SMALL, "--out", str(tmp / "run")])
    main(["export", str(tmp / "run"), "--method", "uce", "--out", str(tmp / "uce")])
    return tmp


def test_round_trip_scores_identical(exported, to_compvis):
    run, folder = exported / "run", exported / "uce"
    state = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    torch.save({"state_dict": to_compvis(state, 1)}, exported / "uce.ckpt")
    save_file(state, exported / "uce-unet.safetensors")
    forms = {"folder": folder, "file": exported / "uce-unet.safetensors", "compvis": exported / "uce.ckpt"}
    sets = [x for name, path in forms.items() for x in ("--set", f"checkpoint@{name}.path={path}")]
    main(["run", "--methods", ",".join(f"checkpoint@{n}" for n in forms), "--attacks", "none", *SMALL, *sets,
          "--out", str(run)])
    original = scores(run, "uce")
    assert set(original) == {"asr", "related.related", "related.unrelated"}
    base = Store(run).records_frame()
    assert len(base) and original["asr"][4] is not None  # per-prompt figures are compared too
    for name in forms:
        assert scores(run, f"checkpoint@{name}") == original, name


def test_export_takes_the_unlearned_model_the_cell_recorded(exported, monkeypatch):
    """A cell run by older code keeps its unlearned model under the key of that code: export finds it through the
    cell's recorded artifacts, not by computing today's key (which moved, e.g., when the key gained a field)."""
    import relearnbench.runner

    monkeypatch.setattr(relearnbench.runner, "unlearn_key", lambda *a: "a-key-the-code-computes-today")
    main(["export", str(exported / "run"), "--method", "uce", "--out", str(exported / "uce-again")])
    name = "unet/diffusion_pytorch_model.safetensors"
    again, first = load_file(exported / "uce-again" / name), load_file(exported / "uce" / name)
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in first)


def test_model_card_holds_method_settings_and_scores(exported):
    text = (exported / "uce" / "README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["library_name"] == "diffusers" and "uce" in meta["tags"]
    rb = meta["relearnbench"]
    toy = tomllib.loads((pathlib.Path(__file__).parents[2] / "methods" / "uce.toml").read_text())["toy"]
    assert rb["method"]["class"] == "relearnbench.methods.uce.UCE" and rb["method"]["config"]["lamb"] == toy["lamb"]
    assert rb["concept"]["name"] == "triangle" and len(rb["concept"]["sha256"]) == 64
    # stage pre: the unlearned model every attack cell of it shares, named without an attack
    assert rb["provenance"]["cell"] == {"model": "toy", "concept": "triangle", "method": "uce", "attack": None,
                                        "seed": 0}
    assert "the unlearned model of `toy/triangle/uce`, seed 0" in text and ".nan" not in text
    metrics = {m["type"]: m for m in meta["model-index"][0]["results"][0]["metrics"]}
    want = scores(exported / "run", "uce")
    for name, (value, lo, hi, n, _) in want.items():
        assert metrics[name]["value"] == value and metrics[name]["args"] == {"lo": lo, "hi": hi, "n": n}
    assert f"| asr | {want['asr'][0]:.4g} |" in text


def test_exported_folder_loads_offline_and_samples(exported, monkeypatch):
    from diffusers import StableDiffusionPipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = StableDiffusionPipeline.from_pretrained(exported / "uce", local_files_only=True)
    images = pipe("a red circle", num_inference_steps=3, guidance_scale=5.0, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 32, 32, 3) and images.std() > 0.01
    unet = load_file(exported / "uce" / "unet" / "diffusion_pytorch_model.safetensors")
    artifact = next((exported / "run" / "artifacts" / "unlearn").glob("*.safetensors"))
    assert all(torch.equal(unet[k], v) for k, v in load_file(artifact).items())


@pytest.mark.parametrize("args, says", [
    (["--set", "checkpoint.path=/no/such/unet.safetensors"], "error: checkpoint.path=/no/such/unet.safetensors: no such file"),
    (["--set", "checkpoint.path=MISMATCH"], "does not fit the base model's UNet (.* tensors): 2 missing (conv_in.weight"),
    # a full CLI run to a failed cell; the refusal itself is tested fast in tests/methods/test_checkpoint.py
    pytest.param(["--set", "checkpoint.path=PICKLE"], "is a pickle holding argparse.Namespace", marks=pytest.mark.slow),
])
def test_bad_checkpoints_are_one_line_errors(tmp_path, run_cli, args, says):
    import argparse
    import re

    from relearnbench.toy import TOY_DIR

    state = load_file(TOY_DIR / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    del state["conv_in.weight"], state["conv_in.bias"]
    save_file(state, tmp_path / "mismatch.safetensors")
    torch.save({"state_dict": state, "args": argparse.Namespace(a=1)}, tmp_path / "pickle.ckpt")
    args = [a.replace("MISMATCH", str(tmp_path / "mismatch.safetensors")).replace("PICKLE", str(tmp_path / "pickle.ckpt"))
            for a in args]
    proc = run_cli("run", "--methods", "checkpoint", "--attacks", "none", *SMALL, *args, "--out", tmp_path / "run")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    line = next(l for l in proc.stderr.splitlines() if re.search(re.escape(says).replace(r"\.\*", ".*"), l))
    assert len(line) < 600


@pytest.mark.slow  # 298 s at load 14 on 2 cores; the default run keeps tests/methods/test_advunlearn.py's harness test
def test_advunlearn_round_trip_carries_the_text_encoder(tmp_path):
    """An advunlearn cell (its UNet the original's, its text encoder trained) exported, then read back through
    checkpoint as the pipeline folder (UNet and text encoder) and as its text encoder alone: every score equals the
    cell's, per prompt too. (Every form checkpoint.text_encoder reads, AdvUnlearn's own state dict included:
    tests/methods/test_checkpoint.py.)"""
    run, folder = tmp_path / "run", tmp_path / "adv"
    budget = ["steps=4", "warmup=2", "attack_steps=2", "ddim_steps=4"]
    main(["run", "--methods", "advunlearn", "--attacks", "none", *SMALL,
          *[x for kv in budget for x in ("--set", f"advunlearn.{kv}")], "--out", str(run)])
    main(["export", str(run), "--method", "advunlearn", "--out", str(folder)])
    exported = load_file(folder / "text_encoder" / "model.safetensors")
    artifact = load_file(next((run / "artifacts" / "unlearn").glob("*.text_encoder.safetensors")))
    bare = {k.removeprefix("text_model."): v for k, v in exported.items()}
    assert bare.keys() == artifact.keys() and all(torch.equal(bare[k], artifact[k]) for k in artifact)
    forms = {"pipeline": [f"path={folder}", f"text_encoder={folder}"], "encoder": [f"text_encoder={folder / 'text_encoder'}"]}
    sets = [x for name, kvs in forms.items() for kv in kvs for x in ("--set", f"checkpoint@{name}.{kv}")]
    main(["run", "--methods", ",".join(f"checkpoint@{n}" for n in forms), "--attacks", "none", *SMALL, *sets,
          "--out", str(run)])
    original = scores(run, "advunlearn")
    assert set(original) == {"asr", "related.related", "related.unrelated"} and original["asr"][4] is not None
    for name in forms:
        assert scores(run, f"checkpoint@{name}") == original, name


@pytest.mark.slow
def test_post_stage_export_is_the_attacked_model(tmp_path):
    """--stage post reruns the cell's attack: the exported model, scored again through checkpoint, gives
    the cell's post scores (ft: full UNet; lora: merged into the UNet)."""
    run = tmp_path / "run"
    attack = ["--set", "ft.curve=[0,4]", "--set", "lora.curve=[0,4]", "--set", "ft.lr=1e-3", "--set", "lora.lr=1e-2"]
    main(["run", "--methods", "uce", "--attacks", "ft,lora", *SMALL, *attack, "--out", str(run)])
    sets = []
    for a in ("ft", "lora"):
        main(["export", str(run), "--method", "uce", "--attack", a, "--stage", "post", "--out", str(tmp_path / a)])
        sets += ["--set", f"checkpoint@{a}.path={tmp_path / a}"]
    main(["export", str(run), "--cell", "toy/triangle/uce/lora/0", "--stage", "post", "--lora", "adapter",
          "--out", str(tmp_path / "adapter")])
    assert (tmp_path / "adapter" / "pytorch_lora_weights.safetensors").exists()
    main(["run", "--methods", "checkpoint@ft,checkpoint@lora", "--attacks", "none", *SMALL, *sets, "--out", str(run)])
    df = Store(run).records_frame()
    for a in ("ft", "lora"):
        post = df[(df["method"] == "uce") & (df["attack"] == a) & (df["stage"] == "post")]
        again = df[(df["method"] == f"checkpoint@{a}") & (df["stage"] == "pre")]
        assert dict(zip(post["metric"], post["value"])) == dict(zip(again["metric"], again["value"])), a


def test_export_errors_are_one_line(tmp_path, run_cli):
    proc = run_cli("export", tmp_path / "nothing", "--method", "uce", "--out", tmp_path / "out")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: no results in {tmp_path / 'nothing'}: expected " \
                                  f"{tmp_path / 'nothing' / 'results.sqlite'} (run `relearnbench run --out DIR` first)"
    proc = run_cli("export", tmp_path, "--cell", "toy/triangle/uce", "--out", tmp_path / "out")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --cell toy/triangle/uce: expected MODEL/CONCEPT/")
