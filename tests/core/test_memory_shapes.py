"""The memory model's kept figures (relearnbench/memory_shapes.json and the cache): what the counting code counts,
read instead of counted, and counted again where the key (architecture, resolution, libraries, code) changed."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("memory_shapes", ROOT / "benchmarks" / "memory_shapes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _recount(cases, monkeypatch, tmp_path) -> dict:
    """Every figure of ``cases`` counted now (nothing kept read), by key."""
    from relearnbench import memory
    from relearnbench.config import parse_sets
    from relearnbench.runner import plan
    from relearnbench.spec import build_spec, load_grid

    monkeypatch.setenv("RELEARNBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(memory, "_KEPT", {})
    monkeypatch.setattr(memory, "_SHAPES", {})
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt,evaluation_seed,evaluation_guidance\na person,1,7.5\n")
    for grid, flags, sets in cases:
        concept = [f"concept.prompts={prompts}"] if grid == "paper-sd14" else []
        memory.estimates(plan(build_spec(load_grid(grid), flags, parse_sets(concept + sets))))
    return {s.key: s for s in memory._SHAPES.values() if s.key is not None}


def _check_shipped(cases, monkeypatch, tmp_path, every: bool = True):
    """Each figure ``cases`` count now equals the shipped one (``every``: and the shipped entries hold no other)."""
    from relearnbench import memory

    shipped = json.loads(memory.SHAPES_FILE.read_text())["shapes"]
    counted = _recount(cases, monkeypatch, tmp_path)
    assert counted
    for key, shape in counted.items():
        assert key in shipped, (f"{shape.label}: relearnbench/memory_shapes.json holds no figures for today's "
                                f"environment {memory.environment()}: run python benchmarks/memory_shapes.py")
        assert shape.model is not None  # counted, not read
        kept = shipped[key]["values"]
        assert {k: kept.get(k) for k in shape.values} == shape.values, shape.label
        assert kept.keys() == shape.values.keys() or not every, shape.label
        assert shipped[key]["model"] == shape.label and shipped[key]["environment"] == memory.environment()


def test_the_shipped_figures_are_what_the_counting_code_counts(monkeypatch, tmp_path):
    """The cheap cases' figures (paper-sd14 on sd14 at 64 px, the quick grid on the toy model) counted again: the
    shipped ones under today's key (a change of library or counting code fails here until regenerated)."""
    cases = [c for c in _generator().CASES
             if (c[0] == "quick" and not c[1]) or (c[0] == "paper-sd14" and "model.resolution=64" in c[2])]
    assert len(cases) == 2
    _check_shipped(cases, monkeypatch, tmp_path, every=False)


@pytest.mark.slow
def test_every_shipped_figure_is_what_the_counting_code_counts(monkeypatch, tmp_path):
    """Every case of benchmarks/memory_shapes.py counted again, SD-1.4 at 512 px and SDXL at 1024 px included: the
    shipped entries, every figure of them (measured: ~2 min on 2 loaded cores)."""
    _check_shipped(_generator().CASES, monkeypatch, tmp_path)


def test_a_dry_run_of_the_paper_grids_reads_its_figures_and_imports_no_diffusers(tmp_path):
    """paper-sdxl's and paper-sd14's memory estimates come from the shipped table: no model is built, diffusers and
    transformers are not imported, nothing is written to the cache."""
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt,evaluation_seed,evaluation_guidance\na person,1,7.5\n")
    code = f"""
import json
import sys
from relearnbench import memory
from relearnbench.config import parse_sets
from relearnbench.runner import plan
from relearnbench.spec import build_spec, load_grid
for grid, sets in (("paper-sdxl", []), ("paper-sd14", ["concept.prompts={prompts}"])):
    lines = memory.estimate_lines(plan(build_spec(load_grid(grid), {{}}, parse_sets(sets))))
    assert len(lines) > 16 and "GB (unlearn" in lines[-1], lines
assert all(s.model is None and not s.counted for s in memory._SHAPES.values())
print(json.dumps([sorted(s.label for s in memory._SHAPES.values()), "diffusers" in sys.modules,
                  "transformers" in sys.modules]))
"""
    env = {**os.environ, "RELEARNBENCH_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [["sd14 at 512 px", "sdxl at 1024 px"], False, False]
    assert not (tmp_path / "cache").exists()


def test_a_figure_not_kept_is_counted_then_cached_and_a_changed_environment_counts_again(monkeypatch, tmp_path):
    """sd14 at 128 px is in no shipped case: its figure is counted on the meta model, kept in the cache and read from
    there by the next process (no model built); another library version is another key, counted again."""
    from relearnbench import memory
    from relearnbench.models import ModelConfig

    monkeypatch.setenv("RELEARNBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(memory, "_KEPT", None)
    config = ModelConfig(resolution=128)
    first = memory.Shape("sd14-random", config)
    assert first.label == "sd14 at 128 px" and first.values == {}
    counted = first.activations(2, train=True)
    assert counted == memory.unet_activations(memory.meta_model("sd14-random", config), 2, True)
    first.keep()
    cached = json.loads(memory.shapes_cache().read_text())["shapes"][first.key]
    assert cached["values"] == {"resolution": 128, "unet activations batch 2 train at 128 px": counted}

    monkeypatch.setattr(memory, "_KEPT", None)  # a new process
    second = memory.Shape("sd14-random", config)
    assert second.activations(2, train=True) == counted and second.model is None
    assert memory.Shape("sd14", config).key == first.key  # the same architecture at the same resolution

    env = memory.environment()
    monkeypatch.setattr(memory, "environment", lambda: {**env, "versions": {**env["versions"], "diffusers": "0.0"}})
    monkeypatch.setattr(memory, "_KEPT", None)
    third = memory.Shape("sd14-random", config)
    assert third.key != first.key and third.values == {}
