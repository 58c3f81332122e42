"""Harness figures, printed (never asserted): (a) overhead of unlearning through the grid versus the
same method called bare; (b) grid scaling: adding an attack does not re-run unlearning, and a rerun of
a finished grid is near-instant; (d) wall seconds and peak memory per stage of one esd × ft cell.

    python benchmarks/harness.py [--method esd] [--model toy] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time


def bare_unlearn(method_name: str, model_name: str, device: str) -> float:
    from relearnbench.api import Context
    from relearnbench.data import GenerateConfig
    from relearnbench.evaluate import SampleConfig
    from relearnbench.concepts import load_concept
    from relearnbench.config import build
    from relearnbench.models import ModelConfig, copy_model, load_model
    from relearnbench.registry import METHODS, MODELS
    from relearnbench.runner import seed_everything

    scale = MODELS.meta(model_name).get("preset", "sd14")
    method = build(METHODS, method_name, scale, {})
    base = load_model(model_name, ModelConfig(), device=device)
    model = copy_model(base)
    ctx = Context(device=device, dtype=None, seed=0, base=lambda: copy_model(base),
                  sample_config=SampleConfig(), generate_config=GenerateConfig())
    seed_everything(0)
    t0 = time.perf_counter()
    method.unlearn(model, load_concept("triangle"), ctx)
    return time.perf_counter() - t0


def cli(*args) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from relearnbench.cli import main; main()", *args],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return time.perf_counter() - t0, proc.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="esd")
    ap.add_argument("--model", default="toy")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    out = pathlib.Path(tempfile.mkdtemp(prefix="rb-bench-"))
    common = ["--model", a.model, "--concepts", "triangle", "--methods", a.method, "--metrics", "asr",
              "--device", a.device, "--quiet", "--out", str(out)]

    # (a) overhead: the unlearning stage's seconds as the grid records them vs the bare call
    bare = bare_unlearn(a.method, a.model, a.device)
    wall, _ = cli("run", *common, "--attacks", "none")
    import pandas as pd

    from relearnbench.store import Store

    df = Store(out, create=False).records_frame()
    grid = float(df[df.stage == "pre"].seconds.iloc[0])
    print(f"(a) {a.method} on {a.model}: bare unlearn {bare:.1f} s, through the grid {grid:.1f} s "
          f"(ratio {grid / bare:.2f}); whole first run incl. model load, evaluation, store: {wall:.1f} s")

    # (b) scaling: a second attack reuses the cached unlearned model; a finished grid reruns instantly
    n_unlearn = len(list((out / "artifacts" / "unlearn").glob("*.safetensors")))
    wall2, _ = cli("run", *common, "--attacks", "none,ft")
    n_unlearn2 = len(list((out / "artifacts" / "unlearn").glob("*.safetensors")))
    wall3, msg = cli("run", *common, "--attacks", "none,ft")
    print(f"(b) adding ft: {wall2:.1f} s, unlearned artifacts {n_unlearn} -> {n_unlearn2} (no re-unlearning); "
          f"rerun of the finished grid: {wall3:.2f} s ({msg.strip().splitlines()[-1]})")

    # (d) per stage: wall seconds and peak memory as recorded
    df = Store(out, create=False).records_frame()
    rows = df[df.metric == "asr"][["attack", "stage", "seconds", "peak_mb", "eval_seconds"]]
    with pd.option_context("display.width", 120):
        print("(d) per stage (seconds: unlearning for pre, attack training up to the step for post@N):")
        print(rows.to_string(index=False))
    print(f"run directory: {out}  (pid {os.getpid()})")


if __name__ == "__main__":
    main()
