"""The paper's SDXL setting (`--grid paper-sdxl`) on the full-size SDXL architecture (`sdxl-random`: random
weights built from SDXL's published configs, 2.57 G UNet parameters, 10.3 GB a float32 copy) on the CPU, at
`model.resolution=64` and 1-2 steps everywhere: the same loader, two text encoders, added time ids, sampler and
metric path as real SDXL.

What fits in a 24 GB machine. By the memory model (`relearnbench run --grid paper-sdxl --model sdxl-random
--device cpu --set model.resolution=64 --methods none,esd-u-1,esd-u-1+meta --attacks none,ft --dry-run`, with the
1-step settings below), a cell holds the harness's cached original model (12.8 GB in bf16: its UNet in float32)
beside its largest stage:

    cell                      bf16 (the grid's dtype)   float32
    none x none               ~24.1 GB                  ~29.0 GB
    none x ft                 ~52.8 GB                  ~57.7 GB
    esd-u-1 x none / ft       ~51.4 / ~52.8 GB          ~61.1 GB
    esd-u-1+meta x none / ft  ~89.7 GB                  ~99.3 GB

so no cell of the grid fits in 24 GB shared with other work: training the 2.6 G UNet holds its float32 weights,
gradients and AdamW's two moments (~41 GB) beside the original, and meta adds the simulated finetune's copy with
its own. What runs here is the evaluation pass of a cell (the original model, as `none` evaluates it, scored by the
grid's metrics on one concept: 11.3 GB by the memory model, 12.7 GB resident measured) in the harness's own
functions; each cell runs through `relearnbench run` where the memory model says it fits in the free memory, and is
skipped with its estimate elsewhere. Run both under the shared memory lock.

Neither open_clip's ViT-L-14 weights nor any SDXL weights are on the test machines (relearnbench downloads
nothing), so the zero-shot judge and the CLIP score use the shipped toy CLIP; everything else is the SDXL path."""

import sqlite3

import pytest

SAMPLE = ["model.resolution=64",  # the weights do not depend on it; a 1024 px SDXL UNet call is minutes on 2 cores
          "sample.steps=2", "sample.images_per_prompt=1", "sample.benign_images_per_prompt=1",
          "generate.steps=2", "asr.bootstrap=10", "clip.bootstrap=10", "clip.model=toy", "clip_zeroshot.model=toy"]
TRAIN = ["esd.steps=1", "esd.ddim_steps=2", "meta.steps=1", "meta.inner_steps=1", "meta.inner_batch=1",
         "meta.forget_images=2", "meta.retain_images=1", "meta.batch_size=1", "meta.term_batches=1",
         "meta.forward_batch=1", "ft.curve=0,1", "ft.batch_size=1", "ft.images_per_prompt=1"]
GB = 2 ** 30


def _spec(methods, attacks, sets, concepts=("spongebob",)):
    from relearnbench.config import parse_sets
    from relearnbench.spec import build_spec, load_grid

    flags = {"models": ["sdxl-random"], "concepts": list(concepts), "methods": methods, "attacks": attacks,
             "device": "cpu"}
    return build_spec(load_grid("paper-sdxl"), flags, parse_sets(sets))


def _sets(methods, attacks):
    """The 1-step settings the cells read (a --set of a namespace no plugin of the run reads is an error)."""
    used = {"esd"} if any(m.startswith("esd") for m in methods) else set()
    used |= {"meta"} if any(m.endswith("+meta") for m in methods) else set()
    used |= {"ft"} & set(attacks)
    return SAMPLE + [s for s in TRAIN if s.split(".")[0] in used]


def _mem_available() -> float:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable")) * 1024
    except (OSError, StopIteration):
        return 0.0


@pytest.mark.slow
def test_paper_sdxl_evaluation_pass_on_sdxl_random():
    """A paper-sdxl cell's evaluation of the original model on sdxl-random at 64 px, through the harness's own
    loader, context and evaluate_stage: ASR by the zero-shot judge over the 6 forget prompts and a CLIP score over
    the 6 benign ones, the images 64 px from the SDXL UNet, conditioned on both encoders and the time ids."""
    import math

    from relearnbench.memory import cell_floors
    from relearnbench.runner import base_model, context, evaluate_stage, plan

    p = plan(_spec(["none"], ["none"], _sets(["none"], ["none"])))
    assert p.scales["sdxl-random"] == "sdxl" and p.model_config.resolution == 64
    need, free = cell_floors(p, ("sdxl-random", "spongebob", "none", "none", 0))["eval"].total, _mem_available()
    if need > free:  # the model alone: the UNet's float32 weights and both text encoders in bf16
        pytest.skip(f"by the memory model the evaluation needs ~{need / GB:.1f} GB; {free / GB:.1f} GB are free")
    model = base_model(p, "sdxl-random")
    assert model.tokenizer_2 is not None and model.unet.config.addition_embed_type == "text_time"
    assert sum(w.numel() for w in model.unet.parameters()) > 2.5e9  # the full architecture, not a tiny one
    ctx = context(p, "sdxl-random", "spongebob", 0, artifacts=None)
    cell = {"model": "sdxl-random", "concept": "spongebob", "method": "none", "seed": 0}
    records = evaluate_stage(p, model, "spongebob", ctx, "pre", cell)
    got = {r.metric: r for r in records}
    assert {"asr", "clip"} <= set(got), sorted(got)
    assert got["asr"].n == 6 and 0 <= got["asr"].value <= 100  # one image per forget prompt, judged
    assert all(math.isfinite(r.value) for r in records)
    assert all(r.eval_peak_mb > 0 for r in records)


CELLS = [pytest.param(["none"], ["none"], id="untrained-cell"),
         pytest.param(["esd-u-1", "esd-u-1+meta"], ["none", "ft"], id="whole-grid")]


@pytest.mark.slow
@pytest.mark.parametrize("methods,attacks", CELLS)
def test_paper_sdxl_cells_on_sdxl_random(run_cli, tmp_path, methods, attacks):
    """`relearnbench run --grid paper-sdxl --model sdxl-random` at 64 px, one concept, where the memory model says
    every cell fits in the free memory (the table above; skipped with the estimates elsewhere): every cell done,
    ASR and CLIP recorded before and after the attack."""
    from relearnbench.memory import cell_floors, cell_peak
    from relearnbench.runner import plan

    sets = _sets(methods, attacks)
    p = plan(_spec(methods, attacks, sets))
    need = {(m, a): cell_peak(cell_floors(p, ("sdxl-random", "spongebob", m, a, 0))) for m in methods for a in attacks}
    free = _mem_available()
    if max(need.values()) > free:
        each = ", ".join(f"{m} x {a} ~{v / GB:.1f} GB" for (m, a), v in need.items())
        pytest.skip(f"by the memory model the cells need {each}; {free / GB:.1f} GB are free")
    out = tmp_path / "run"
    run_cli("run", "--grid", "paper-sdxl", "--model", "sdxl-random", "--device", "cpu", "--concepts", "spongebob",
            "--methods", ",".join(methods), "--attacks", ",".join(attacks), "--jobs", "1",
            *[a for s in sets for a in ("--set", s)], "--out", out, "--quiet", check=True, timeout=3600)
    db = sqlite3.connect(out / "results.sqlite")
    cells = db.execute("SELECT method, attack, status, error FROM cells").fetchall()
    assert {(m, a) for m, a, *_ in cells} == set(need)
    assert [(m, a, e) for m, a, s, e in cells if s != "done"] == []
    stages = set(db.execute("SELECT method, attack, stage, metric FROM records").fetchall())
    for m, a in need:
        assert {(m, a, "pre", "asr"), (m, a, "post", "asr"), (m, a, "pre", "clip")} <= stages
