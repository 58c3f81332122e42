"""``--dtype bf16`` through the CLI on the tiny model, on the CPU, for every registered method, attack and
metric: the frozen text encoder and VAE run in bfloat16, the trained UNet stays float32, and every cell
finishes (before the fix, each one failed with "expected m1 and m2 to have the same dtype")."""

import json
import sqlite3

import pytest

from relearnbench.api import Metric, Score
from relearnbench.registry import ATTACKS, METHODS, METRICS
from relearnbench.testing import TINY_MODELS

# the esd-*-3 presets differ from esd-*-1 only by a number; each wrapper once, around each method family
BASES = [n for n in METHODS.list() if n != "dummy" and not n.endswith("-3")]
WRAPPED = [f"{n}+meta" for n in BASES if "-" not in n] + ["esd+retain"]
ATTACK_NAMES = [n for n in ATTACKS.list() if n != "dummy"]
METRIC_NAMES = [n for n in METRICS.list() if n != "dummy"]

SAMPLE = ["sample.images_per_prompt=1", "sample.benign_images_per_prompt=1", "sample.steps=2"]
# a couple of steps each; a plugin that is not named here runs with its toy preset
TINY = {
    "esd": ["steps=2", "batch_size=2", "ddim_steps=4", "images=4"],
    "sdd": ["steps=2", "batch_size=2", "ddim_steps=4"],
    "salun": ["steps=2", "batch_size=4", "forget_images=4", "retain_images=4"],
    "meta": ["steps=2", "lr=1e-3", "inner_steps=1", "inner_batch=2", "forget_images=4", "retain_images=2",
             "batch_size=2"],
    **{a: ["curve=0,1", "batch_size=2", "images_per_prompt=1"] for a in ("ft", "ft_one", "ft_clean", "ft_adaptive", "lora")},
    "unlearndiffatk": ["k=2", "timesteps=2", "iterations=1"],
    "ci": ["steps=2", "batch_size=2", "images_per_prompt=1"],
    "ca": ["steps=2", "batch_size=2", "images=4"],
    "fmn": ["steps=2", "batch_size=2", "images=4"],
    "spm": ["steps=2", "ddim_steps=4", "warmup=0"],
    "advunlearn": ["steps=3", "warmup=1", "attack_steps=2", "ddim_steps=4", "retain_batch=2"],
    "erasediff": ["steps=2", "batch_size=2", "forget_images=4", "retain_images=4", "inner_steps=1"],
    "scissorhands": ["steps=2", "batch_size=2", "forget_images=4", "retain_images=4", "snip_batches=2"],
    "p4d": ["iterations=2", "eval_step=1"],
    "ringabell": ["population=8", "generations=3"],
    "fid": ["reference_images=8"],
    "gradients": ["batches=1", "batch_size=2", "timesteps=500"],
}

# every method's own budget (by its config's name: esd-u-1 reads esd's) and meta's
METHOD_BUDGETS = sorted({METHODS.get(n).config_name for n in BASES} & set(TINY))
RUNS = {  # every method with no attack, every attack on no method, every metric on one cell
    "methods": (BASES, ["none"], ["asr"], METHOD_BUDGETS),
    "wrapped": (WRAPPED, ["none"], ["asr"], METHOD_BUDGETS + ["meta"]),
    "attacks": (["none"], ATTACK_NAMES, ["asr"], ATTACK_NAMES),
    "metrics": (["none"], ["none"], METRIC_NAMES, METRIC_NAMES),
}


@pytest.mark.parametrize("arch", TINY_MODELS)  # SD-1.x and SDXL alike, no per-model branch
# the default run keeps one run, every method on tiny (the others slow: 127 s quiet for the four on tiny); the
# tiny-sdxl runs are slow by tests/conftest.py's rule
@pytest.mark.parametrize("kind", [k if k == "methods" else pytest.param(k, marks=pytest.mark.slow) for k in RUNS])
def test_bf16_runs_every_plugin_on_cpu(kind, arch, tmp_path, run_cli):
    methods, attacks, metrics, namespaces = RUNS[kind]
    sets = SAMPLE + [f"{ns}.{kv}" for ns in namespaces for kv in TINY.get(ns, [])]
    if any(m.startswith("checkpoint") for m in methods):  # an external UNet: the tiny model's own, saved as a file
        from safetensors.torch import save_file

        save_file(TINY_MODELS[arch]().unet.state_dict(), str(tmp_path / "unet.safetensors"))
        sets.append(f"checkpoint.path={tmp_path / 'unet.safetensors'}")
    out = tmp_path / "run"
    proc = run_cli("run", "--model", arch, "--concepts", "triangle", "--methods", ",".join(methods),
                   "--attacks", ",".join(attacks), "--metrics", ",".join(metrics), "--dtype", "bf16", "--quiet",
                   *[a for s in sets for a in ("--set", s)], "--out", out, env={"OMP_NUM_THREADS": "1"}, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with sqlite3.connect(out / "results.sqlite") as db:
        cells = db.execute("SELECT method, attack, status, config FROM cells").fetchall()
        recorded = {m.split(".")[0] for (m,) in db.execute("SELECT DISTINCT metric FROM records")}
    assert {(m, a) for m, a, *_ in cells} == {(m, a) for m in methods for a in attacks}
    assert {st for _, _, st, _ in cells} == {"done"}
    assert all(json.loads(cfg)["dtype"] == "bf16" for *_, cfg in cells)
    assert recorded == set(metrics)


class Dtypes(Metric):
    """the evaluated model's parameter dtypes (in its info); value: its forget images' mean brightness"""

    config_name = "dtypes"

    def compute(self, ev):
        images, _, _ = ev.images("forget")
        parts = {k: str(next(getattr(ev.model, k).parameters()).dtype) for k in ("unet", "text_encoder", "vae")}
        return [Score("dtypes", float(images.float().mean()), n=len(images), info={"parts": parts})]


def test_bf16_casts_the_frozen_parts_only_and_moves_the_images_a_little(tmp_path, monkeypatch):
    """Inside a run (in this process: one job), as the evaluation sees each model: text encoder and VAE in
    bfloat16, the UNet (esd's trained one too) in float32; all float32 without --dtype. The original model's
    forget images have a mean brightness within 0.02 of the float32 run's, and not equal to it (were --dtype
    ignored, it would be equal)."""
    from relearnbench.launch import execute
    from relearnbench.registry import METRICS, Entry
    from relearnbench.spec import build_spec

    METRICS.names()  # entry points loaded first, then ours for this test only
    monkeypatch.setitem(METRICS._entries, "dtypes", Entry("dtypes", Dtypes, "", {"higher_is_better": True}))
    sample = {"images_per_prompt": 1, "benign_images_per_prompt": 1, "steps": 2}
    runs = {}
    for dtype, methods in (("float32", "none"), ("bf16", "none,esd")):
        flags = {"models": "tiny", "concepts": "triangle", "methods": methods, "attacks": "none", "metrics": "dtypes",
                 "dtype": dtype, "jobs": 1}
        sets = {"sample": sample, **({"esd": dict(steps=2, batch_size=2, ddim_steps=4, images=4)} if "esd" in methods else {})}
        execute(build_spec(None, flags, sets), tmp_path / dtype, quiet=True)
        with sqlite3.connect(tmp_path / dtype / "results.sqlite") as db:
            rows = db.execute("SELECT method, value, info FROM records WHERE metric = 'dtypes' AND stage = 'pre'")
            runs.update({(dtype, m): (v, json.loads(info)["parts"]) for m, v, info in rows})
    bf16 = {"unet": "torch.float32", "text_encoder": "torch.bfloat16", "vae": "torch.bfloat16"}
    assert runs["float32", "none"][1] == {"unet": "torch.float32", "text_encoder": "torch.float32", "vae": "torch.float32"}
    assert runs["bf16", "none"][1] == runs["bf16", "esd"][1] == bf16
    (full, _), (half, _) = runs["float32", "none"], runs["bf16", "none"]
    assert half != full and abs(half - full) < 0.02, runs
