"""Peak memory per stage (relearnbench.memory.measure, recorded with every record) and the memory model."""

import pathlib

import pytest

from relearnbench.memory import measure

MB = 2 ** 20
linux = pytest.mark.skipif(not pathlib.Path("/proc/self/clear_refs").exists(),
                           reason="the resident peak is reset per stage through /proc/self/clear_refs (Linux)")


@linux
def test_a_stage_peak_is_its_own_and_an_inner_stage_has_its_own():
    with measure("cpu") as first:
        big = b"\x01" * (300 * MB)  # written, so resident
        del big
    with measure("cpu") as outer:
        with measure("cpu") as inner:
            big = b"\x01" * (300 * MB)
            del big
        small = b"\x01" * (40 * MB)
        del small
    # the earlier stage's 300 MB does not hide that the outer one peaked lower; the inner stage's peak is
    # its own and does not count as the outer's
    assert first["peak_mb"] > outer["peak_mb"] + 200
    assert inner["peak_mb"] > outer["peak_mb"] + 200
    assert first["seconds"] > 0 and outer["reserved_mb"] == 0.0


WIDE = "tiny-x8-memtest"


def _register_wide():
    from relearnbench.registry import MODELS

    if WIDE not in MODELS:
        MODELS.register(WIDE, load_wide, preset="toy",
                        description="the tiny model with 8x the UNet channels (tests/core/test_memory.py)")


def load_wide(name, config, meta, device="cpu", dtype=None):
    from relearnbench.testing import tiny_model

    return tiny_model(device=device, width=8)


def test_every_record_carries_its_stage_and_evaluation_peak(tmp_path):
    """The fast path (torch-free dummy plugins): every record of every stage has both peaks, and
    ``relearnbench table --timing`` lists one row per cell and stage with GB beside seconds."""
    from relearnbench.executors import run_local
    from relearnbench.spec import Spec
    from relearnbench.store import Store
    from relearnbench.table import timing_table

    from relearnbench import builtins

    if hasattr(builtins, "register_fakes"):  # the dummy plugins are registered on demand (tests/conftest.py's fakes)
        builtins.register_fakes()
    spec = Spec(models=["toy"], concepts=["triangle"], methods=["dummy"], attacks=["dummy", "none"],
                metrics=["dummy"], jobs=1)
    store = Store(tmp_path / "run")
    assert run_local(spec, store).failed == 0
    df = store.records_frame()
    store.close()
    assert (df.peak_mb > 0).all()
    # a stage evaluated has its peak; one that reuses another's scores (the none attack's) was not evaluated again
    assert ((df.eval_peak_mb > 0) == (df.eval_seconds > 0)).all() and (df.eval_seconds > 0).sum() == 5
    table = timing_table(df)
    assert list(table.columns) == ["model", "concept", "method", "attack", "seed", "stage", "made by", "seconds",
                                   "peak_gb", "eval_seconds", "eval_peak_gb"]
    assert len(table) == len(df.groupby(["attack", "stage"]))


@pytest.mark.slow
@linux
def test_a_larger_model_records_a_larger_peak_at_every_stage(tmp_path):
    """The tiny model runs first: memory the allocator keeps after a stage stays resident (and counts in later
    stages' peaks), a real cost, so the figures are compared in the order that does not depend on it."""
    from relearnbench.executors import run_local
    from relearnbench.spec import Spec
    from relearnbench.store import Store
    from relearnbench.table import timing_table

    _register_wide()
    sets = {"sample": {"images_per_prompt": 1, "benign_images_per_prompt": 1, "steps": 2, "batch_size": 8},
            "esd": {"steps": 2, "batch_size": 4, "ddim_steps": 2},
            "ft": {"curve": (0, 1), "batch_size": 4, "images_per_prompt": 1}}
    spec = Spec(models=["tiny", WIDE], concepts=["triangle"], methods=["esd-u-1"], attacks=["ft"], metrics=["asr"],
                sets=sets, jobs=1)
    store = Store(tmp_path / "run")
    outcome = run_local(spec, store)
    assert outcome.failed == 0, outcome.failures
    df = store.records_frame()
    store.close()
    peaks = {}
    for model, g in df.groupby("model"):
        pre, post = g[g.stage == "pre"].iloc[0], g[g.stage == "post"].iloc[0]
        peaks[model] = {"unlearn": pre.peak_mb, "pre-eval": pre.eval_peak_mb, "attack": post.peak_mb,
                        "post-eval": post.eval_peak_mb}
        assert all(v > 0 for v in peaks[model].values()), peaks
    # the wide UNet: 12.4 M weights against 0.2 M, 47 MB a float32 copy; training holds ~5 copies (the cached
    # original, the trained one, its gradients, AdamW's two moments), evaluation at least 2
    for stage in ("unlearn", "attack"):
        assert peaks[WIDE][stage] > peaks["tiny"][stage] + 150, (stage, peaks)
    for stage in ("pre-eval", "post-eval"):
        assert peaks[WIDE][stage] > peaks["tiny"][stage] + 60, (stage, peaks)
    table = timing_table(df)
    assert {"peak_gb", "eval_peak_gb", "seconds", "eval_seconds", "made by"} <= set(table.columns)
    assert "reserved_gb" not in table.columns  # nothing reserved on the CPU
    assert list(table[table.model == "tiny"].stage) == ["pre", "post@0", "post@1", "post"]
    row = table[(table.model == WIDE) & (table.stage == "pre")].iloc[0]
    assert row["made by"] == "unlearn" and row.peak_gb == round(peaks[WIDE]["unlearn"] / 1024, 3)


def _tiny_run(tmp_path, name: str, methods, extra: dict | None = None):
    from relearnbench.executors import run_local
    from relearnbench.spec import Spec
    from relearnbench.store import Store

    sets = {"sample": {"images_per_prompt": 1, "benign_images_per_prompt": 1, "steps": 2},
            "esd": {"steps": 2, "batch_size": 2, "ddim_steps": 2},
            "meta": {"steps": 2, "inner_steps": 2, "inner_batch": 2, "forget_images": 4, "retain_images": 2,
                     "batch_size": 2},
            "ft": {"curve": (0, 1), "batch_size": 2, "images_per_prompt": 1}, **(extra or {})}
    spec = Spec(models=["tiny"], concepts=["triangle"], methods=methods, attacks=["ft"], metrics=["asr"],
                sets=sets, jobs=1)
    store = Store(tmp_path / name)
    outcome = run_local(spec, store)
    assert outcome.failed == 0, outcome.failures
    df = store.records_frame().sort_values(["method", "stage", "metric"]).reset_index(drop=True)
    store.close()
    weights = {}
    for f in sorted((tmp_path / name / "artifacts" / "unlearn").glob("*.safetensors")):
        from safetensors.torch import load_file

        weights[f.name] = load_file(str(f))
    return df, weights


@pytest.mark.slow
def test_gradient_checkpointing_leaves_weights_and_records_equal(tmp_path):
    """unlearn.checkpointing recomputes activations in backward: the same unlearned weights, bit for bit, and the
    same records (ESD+meta: ESD's loss and the meta terms, whose θ' copy inherits it). Measured: 12 min with ESD and
    ESD+meta on a loaded 2-core machine, hence slow."""
    import torch

    plain, w_plain = _tiny_run(tmp_path, "plain", ["esd-u-1+meta"])
    saved, w_saved = _tiny_run(tmp_path, "checkpointed", ["esd-u-1+meta"], {"unlearn": {"checkpointing": True}})
    assert w_plain.keys() == w_saved.keys() and len(w_plain) == 1  # the setting is no part of the artifact key
    for name in w_plain:
        assert all(torch.equal(w_plain[name][k], w_saved[name][k]) for k in w_plain[name]), name
    assert plain[["method", "stage", "metric", "value", "lo", "hi"]].equals(
        saved[["method", "stage", "metric", "value", "lo", "hi"]])


def test_an_unlearned_model_loads_into_its_state_tensors_not_a_third_copy():
    """runner._unlearned rebuilds the unlearned model from its saved state: the UNet's weights are the state's own
    tensors (no deep copy of the original's weights beside them) and equal it bit for bit."""
    import torch

    from relearnbench.models import copy_model
    from relearnbench.testing import tiny_model

    base = tiny_model()
    original = {k: v.clone() for k, v in base.unet.state_dict().items()}
    state = {k: v + 1 for k, v in base.unet.state_dict().items()}
    copy = copy_model(base, state)
    for name, p in copy.unet.named_parameters():
        assert p.data_ptr() == state[name].data_ptr() and not p.requires_grad
    assert all(torch.equal(copy.unet.state_dict()[k], state[k]) for k in state)
    assert all(torch.equal(v, original[k]) for k, v in base.unet.state_dict().items())  # the original untouched


def test_the_memory_model_counts_the_full_size_architecture_without_allocating():
    """SD-1.4's UNet, text encoder and VAE on the meta device: their published parameter counts; ESD-u's floor
    holds the trained weights' gradients and AdamW state, ft's every weight's; a wider batch, more activations."""
    from relearnbench.memory import GB, meta_model, unet_activations

    model = meta_model("sd14-random")
    counts = [sum(p.numel() for p in m.parameters()) for m in (model.unet, model.text_encoder, model.vae)]
    assert counts == [859520964, 123060480, 83653863]
    assert next(model.unet.parameters()).is_meta
    one, two = unet_activations(model, 1, resolution=64), unet_activations(model, 2, resolution=64)
    assert 0.9 < two / one / 2 < 1.1 and 0.01 < one / GB < 0.1  # linear in the batch; at 64 px, tens of MB


def test_the_preflight_warns_of_a_cell_larger_than_the_free_memory(monkeypatch, capsys):
    """sd14-random's ft cell needs ~20 GB by the model: with 1 GB free the preflight names it (and runs on); a toy
    model's run is not estimated at all."""
    import relearnbench.memory as memory
    from relearnbench.preflight import preflight
    from relearnbench.runner import plan
    from relearnbench.spec import Spec

    monkeypatch.setattr(memory, "free_bytes", lambda device: 2 ** 30)
    big = plan(Spec(models=["sd14-random"], concepts=["triangle"], methods=["none"], attacks=["none", "ft"],
                    metrics=["asr"], sets={"model": {"resolution": 64}}))
    warnings = memory.preflight_warnings(big)
    assert len(warnings) == 2 and "sd14-random/triangle/none/ft/0 may need ~" in warnings[1]
    ft = float(warnings[1].partition("may need ~")[2].split()[0])
    assert 16 < ft < 24 and "1.0 GB free" in warnings[1]  # 3.2 GB a float32 UNet: weights, gradients, AdamW, cache
    preflight(big)
    assert "warning: cell sd14-random/triangle/none/ft/0" in capsys.readouterr().err
    toy = plan(Spec(models=["toy"], concepts=["triangle"], methods=["none"], attacks=["ft"], metrics=["asr"]))
    assert memory.preflight_warnings(toy) == []


def test_the_memory_model_builds_each_model_s_own_architecture():
    """sdxl and sdxl-random are SDXL (a 2.57 G-parameter UNet, a second text encoder), sd21 and sd2-random SD-2.1,
    the SD-1 models SD-1.4: the same cell on SDXL needs more at every stage than on SD-1.4, at the same 64 px."""
    from relearnbench.memory import GB, architecture, cell_floors, cell_peak, meta_model
    from relearnbench.models import ModelConfig
    from relearnbench.runner import plan
    from relearnbench.spec import Spec

    assert [architecture(n, ModelConfig()) for n in ("sd14", "sd15", "sd14-random", "sd21", "sd2-random", "sdxl",
                                                      "sdxl-random", "toy")] == \
        ["sd14", "sd14", "sd14", "sd21", "sd21", "sdxl", "sdxl", None]
    xl = meta_model("sdxl")
    assert sum(p.numel() for p in xl.unet.parameters()) == 2567463684 and xl.text_encoder_2 is not None
    assert xl.text_encoder.config.hidden_size == 768 and xl.text_encoder_2.config.hidden_size == 1280
    assert meta_model("sd2-random").text_encoder.config.hidden_size == 1024
    p = plan(Spec(models=["sd14-random", "sdxl-random"], concepts=["triangle"], methods=["esd"], attacks=["ft"],
                  metrics=["asr"], sets={"model": {"resolution": 64}}))
    sd14, sdxl = (cell_floors(p, (m, "triangle", "esd", "ft", 0)) for m in ("sd14-random", "sdxl-random"))
    for stage in ("unlearn", "attack", "eval", "harness"):
        assert sdxl[stage].total > 2 * sd14[stage].total if stage != "eval" else sdxl[stage].total > sd14[stage].total
    assert cell_peak(sdxl) / GB > 2.5 * cell_peak(sd14) / GB


@linux
def test_the_memory_benchmark_reads_a_run_s_peaks_beside_its_floors(run_cli, tmp_path):
    """`python benchmarks/memory.py --run DIR` prints each stage of the run's cells: its floor by the memory model
    of the run's own spec, and the peak the run recorded less this process's baseline (never negative: the run's
    process held at least the libraries)."""
    import re
    import subprocess
    import sys

    from relearnbench.memory import GB, cell_floors
    from relearnbench.runner import plan
    from relearnbench.spec import Spec

    out = tmp_path / "run"
    run_cli("run", "--concepts", "triangle", "--methods", "none", "--attacks", "none", "--metrics", "asr", "--jobs",
            "1", "--set", "sample.images_per_prompt=1", "--set", "sample.steps=2", "--out", out, "--quiet", check=True)
    bench = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "memory.py"
    text = subprocess.run([sys.executable, bench, "--run", out], capture_output=True, text=True, check=True).stdout
    assert f"measured on toy ({out}), float32, cpu" in text
    rows = {m[0]: m[1:] for m in re.findall(r"^\| none \| none \| (\w+) \| ([\d.]+) \| ([\d.]+) \| ([-\d.]+) \|", text,
                                            re.M)}
    assert set(rows) == {"unlearn", "attack", "eval"}
    floors = cell_floors(plan(Spec(models=["toy"], concepts=["triangle"], methods=["none"], attacks=["none"],
                                   metrics=["asr"])), ("toy", "triangle", "none", "none", 0), dtype="float32")
    for stage, (floor, harness, measured) in rows.items():
        assert float(floor) == round(floors[stage].total / GB, 3)
        assert float(harness) == (0.0 if stage == "unlearn" else round(floors["harness"].total / GB, 3))
        assert float(measured) > 0


@linux
def test_release_freed_hands_the_heap_s_free_pages_back():
    """Tensors below glibc's mmap threshold live on its heap: freed, they stay resident (a later stage's peak
    would count them) until release_freed trims the heap."""
    import torch

    from relearnbench.memory import _glibc, release_freed

    if _glibc() is None:
        pytest.skip("the C library is not glibc: no malloc_trim")

    def rss_mb():
        status = pathlib.Path("/proc/self/status").read_text()
        return int(next(l for l in status.splitlines() if l.startswith("VmRSS:")).split()[1]) / 1024

    t = torch.ones(5_000_000)  # a freed 20 MB mapping raises glibc's threshold: 4 MB tensors then go on the heap
    del t
    tensors = [torch.ones(1_000_000) for _ in range(200)]  # 800 MB on the heap
    held = rss_mb()
    kept = tensors[1::2]  # every other one freed: the heap cannot shrink from its top
    del tensors
    freed = rss_mb()
    release_freed()
    trimmed = rss_mb()
    assert held - freed < 100 < 300 < freed - trimmed, (held, freed, trimmed)  # 400 MB resident until trimmed
    del kept


def test_an_evaluation_between_ft_curve_points_holds_the_attacker_s_adamw_state():
    """ft keeps its AdamW moments across an intermediate curve point and frees them before the last one
    (tests/attacks/test_ft.py): the memory model's evaluation floor says the same, two float32 UNets more."""
    from relearnbench.config import parse_sets
    from relearnbench.memory import cell_floors
    from relearnbench.runner import plan
    from relearnbench.spec import Spec

    def eval_floor(curve):
        p = plan(Spec(models=["sd14-random"], concepts=["triangle"], methods=["none"], attacks=["ft"],
                      metrics=["asr"], sets=parse_sets([f"ft.curve={curve}", "model.resolution=64"])))
        return cell_floors(p, ("sd14-random", "triangle", "none", "ft", 0))["eval"]

    last_only, between = eval_floor("0,1"), eval_floor("0,1,2")
    assert between.total - last_only.total == 2 * 4 * 859520964  # SD-1.4's UNet weights, two float32 moments
    assert eval_floor("1").total == last_only.total


def test_rece_s_floor_holds_its_float64_original_keys_and_values_beside_uce_s():
    """RECE's rounds compare each edit with the original W⁰ of every cross-attention key and value projection, kept
    in float64: SD-1.4's 16 of each, 768 x (320 x 5 + 640 x 5 + 1280 x 6) weights a kind."""
    from relearnbench.config import parse_sets
    from relearnbench.memory import cell_floors
    from relearnbench.runner import plan
    from relearnbench.spec import Spec

    p = plan(Spec(models=["sd14-random"], concepts=["triangle"], methods=["uce", "rece"], attacks=["none"],
                  metrics=["asr"], sets=parse_sets(["model.resolution=64"])))
    uce, rece = (cell_floors(p, ("sd14-random", "triangle", m, "none", 0))["unlearn"] for m in ("uce", "rece"))
    assert rece.total - uce.total == 8 * 2 * 768 * (320 * 5 + 640 * 5 + 1280 * 6)
