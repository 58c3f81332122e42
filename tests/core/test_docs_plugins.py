"""The plugin guide (docs/plugins.md) works from its own text: its python blocks, one after the other, are
the plugin file it describes; the harness loads it with --plugin and runs its method wrapped in +meta, its
attack and its metric on the tiny model. A `prepare` that returns bare parameters instead of the
`(name, parameter)` pairs fails its cell with one line naming the pairs, for the method and its +meta."""

import csv
import io
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "plugins.md"
PAIRS = "return [(n, p) for n, p in model.unet.named_parameters()"

# a few steps of everything, on the tiny random model: a check that the code runs, not a measurement
FAST = ["--model", "tiny", "--concepts", "triangle", "--jobs", "1", "--quiet",
        "--set", "sample.images_per_prompt=1", "--set", "sample.steps=2", "--set", "generate.steps=2",
        "--set", "redirect.steps=2", "--set", "redirect.lr=1e-3", "--set", "redirect.ddim_steps=2",
        *[a for kv in ("steps=2", "lr=1e-3", "inner_steps=1", "inner_batch=2", "forget_images=4",
                       "retain_images=2", "batch_size=2") for a in ("--set", f"meta.{kv}")]]


def guide_code() -> str:
    """The guide's python blocks, verbatim, in order."""
    blocks = re.findall(r"^```python\n(.*?)^```", GUIDE.read_text(), re.S | re.M)
    assert len(blocks) == 3, "the guide has a method, an attack and a metric block"
    return "\n\n".join(blocks)


def test_the_guide_names_what_a_loss_method_needs():
    text = GUIDE.read_text()
    for needed in ("from relearnbench.api import Attack, LossMethod, Metric, Score", "def prepare(self, model, concept, ctx)",
                   "def loss(self, model, step)", "steps: int", "lr: float", "(name, parameter)", PAIRS,
                   "concept.train", "--plugin my_plugins.py"):
        assert needed in text, needed


def test_the_guide_plugin_runs_with_meta(tmp_path, run_cli):
    plugin = tmp_path / "my_plugins.py"
    plugin.write_text(guide_code())
    out = tmp_path / "run"
    run_cli("run", "--plugin", plugin, *FAST, "--methods", "none,redirect+meta", "--attacks", "none,tiny_ft",
            "--metrics", "brightness", "--set", "tiny_ft.steps=2", "--set", "tiny_ft.curve=0,2",
            "--set", "tiny_ft.images_per_prompt=1", "--set", "tiny_ft.batch_size=2", "--out", out,
            cwd=tmp_path, check=True)
    table = run_cli("table", out, "--plugin", plugin, "--long", "--format", "csv", cwd=tmp_path, check=True).stdout
    got = {(r["method"], r["attack"], r["stage"]): float(r["value"])
           for r in csv.DictReader(io.StringIO(table)) if r["metric"] == "brightness"}
    # the attack's curve: scored before it and after its 2 steps, on the unlearned model
    assert {("redirect+meta", "tiny_ft", "pre"), ("redirect+meta", "tiny_ft", "post@2")} <= set(got)
    assert got[("redirect+meta", "none", "pre")] != got[("none", "none", "pre")]  # the method moved the weights


def test_bare_parameters_from_prepare_are_named(tmp_path, run_cli):
    code = guide_code()
    assert code.count(PAIRS) == 1
    plugin = tmp_path / "my_plugins.py"
    plugin.write_text(code.replace(PAIRS, "return [p for n, p in model.unet.named_parameters()"))
    out = tmp_path / "run"
    proc = run_cli("run", "--plugin", plugin, *FAST, "--methods", "redirect,redirect+meta", "--attacks", "none",
                   "--metrics", "brightness", "--out", out, cwd=tmp_path)
    assert proc.returncode == 1
    failed = [line for line in proc.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 2, proc.stderr
    for line in failed:  # one line each, for the method and its +meta, naming the pairs prepare must return
        assert "redirect: prepare must return the (name, parameter) pairs" in line, line
        assert "Parameter items" in line and "too many values to unpack" not in line
