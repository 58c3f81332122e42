"""What each cell kind of the ``paper-sd14`` grid needs in memory: the floor of its recipe from the memory model
(relearnbench.memory: weights, gradients and AdamW state of what trains, frozen copies in their dtype, and
activations counted on torch's ``meta`` device with the real SD-1.4 UNet, text encoder and VAE), at 512 px
for a GPU, and beside it the peak measured by running the same cells with a step or two on a small model.

    python benchmarks/memory.py                       # the floors at 512 px, bf16 and the grid's dtype (~1 min)
    python benchmarks/memory.py --model tiny          # and each cell measured on the tiny model (minutes)
    python benchmarks/memory.py --model toy
    python benchmarks/memory.py --model sd14-random --set model.resolution=64    # a quiet machine, >= 24 GB free
    python benchmarks/memory.py --run DIR             # the peaks a run directory recorded, beside its cells' floors
    python benchmarks/memory.py --set unlearn.checkpointing=true ...              # a saving's floor

The last table is the README's: each cell's peak with the published settings, with the savings that keep the
numbers (SAVINGS) and with every saving (NUMERIC_SAVINGS too, which change them; labelled ours).

Floors: per stage (unlearn, attack, evaluation), plus what the harness holds beside the attack and the evaluation
(the original model, cached between cells, and the cell's own text encoder copy; while a method trains it holds no
original); a cell's peak is its largest stage's floor plus that share.
Activations: what one UNet forward pass leaves for backward at the recipe's largest batch with a graph, counted
with fused attention (CUDA's flash / memory-efficient kernels, the CPU's flash kernel: no L x S attention matrix);
backward's transient buffers (about one layer's) are not counted; sampling: the most alive at once during one
guided UNet call at sample.batch_size x 2 or the VAE decoding sample.batch_size images, whichever is larger.

Measured (``--model``): every cell of the grid on that model at its resolution, in float32 on the CPU, with 1-2
steps everywhere and asr alone (concept triangle), in this process; a stage's figure is its recorded peak (the
process's resident high-water mark within the stage) less the process's resident size before any model was
built (``baseline``: Python, torch, the plugins, diffusers' and transformers' model classes). Overhead = measured -
floor - harness, as a share of the floor.
On the tiny and toy models the allocator's and the libraries' own megabytes dominate the overhead; the
sd14-random column is the one that tests the model, and needs ~20 GB free and a machine nobody else is using.
``--run DIR`` reads a run already made instead (any grid, model and settings: the floors are its own spec's; the
slow test tests/toy/test_sd14_random.py's whole grid keeps one under pytest's --basetemp), its baseline measured in
this process the same way.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

# each namespace's steps cut to 1-2 for the measured column (tests/toy/test_sd14_random.py's, and the newer plugins')
STEPS = {
    "sample": ["steps=2", "images_per_prompt=1", "benign_images_per_prompt=1"],
    "esd": ["steps=1", "ddim_steps=2", "images=2"],
    "sdd": ["steps=1", "ddim_steps=2"],
    "meta": ["steps=1", "inner_steps=1", "forget_images=4", "retain_images=2", "term_batches=1"],
    "ft": ["curve=0,1", "images_per_prompt=1"], "ft_clean": ["curve=0,1", "images_per_prompt=1"],
    "ft_one": ["curve=0,1", "images_per_prompt=2"],
    "unlearndiffatk": ["iterations=1", "timesteps=1"],
    "asr": ["bootstrap=10"],
}


STAGES = ("unlearn", "attack", "eval")
# the opt-in savings that leave the numbers as they are (up to float order): recompute the trained UNet's activations
# in backward, and meta's terms one image per UNet call (its published batch of 10 images is a sum of per-image losses)
SAVINGS = ["unlearn.checkpointing=true", "meta.forward_batch=1"]
# the opt-in savings that change the numbers (labelled ours): AdamW's moments in 8 bits (bitsandbytes, CUDA; bfloat16
# on the CPU) and meta's simulated finetune on the trained weights alone
NUMERIC_SAVINGS = ["unlearn.optimizer_state=8bit", "meta.inner_train=base"]
FITS = 0.9  # of a card's memory usable by tensors: CUDA's context and the allocator's fragmentation take the rest


def parse_sets(pairs: list[str]) -> dict:
    from relearnbench.config import parse_sets as parse

    return parse(pairs)


def spec_for(grid: dict, model: str | None, extra: list[str]):
    """The grid as a spec: its methods and attacks, concept triangle (the memory model reads no prompt), on
    ``model`` with its steps cut (``STEPS``), or on the grid's own model for the floors alone."""
    from relearnbench.errors import UserError
    from relearnbench.runner import cached_plan
    from relearnbench.spec import build_spec

    grid = {**grid, "concepts": ["triangle"], "seeds": [0]}
    sets = list(extra)
    if model:
        grid.update(models=[model], metrics=["asr"], device="cpu", dtype="float32", jobs=1, set={})
        sets = [f"{ns}.{kv}" for ns, kvs in STEPS.items() for kv in kvs] + sets
    while True:  # a --set of a namespace no plugin of this grid reads is an error: drop those of STEPS
        spec = build_spec(grid, {}, parse_sets(sets))
        try:
            return spec, cached_plan(spec)
        except UserError as e:
            ns = str(e).partition("--set ")[2].partition(".*")[0]
            if not ns or not any(s.startswith(ns + ".") for s in sets) or ns not in STEPS:
                raise
            sets = [s for s in sets if not s.startswith(ns + ".")]


def floor_rows(p, cells, dtype: str | None, resolution: int | None = None) -> list[dict]:
    from relearnbench.memory import GB, cell_floors, cell_peak

    rows = []
    for cell in cells:
        f = cell_floors(p, cell, resolution=resolution, dtype=dtype)
        rows.append({"method": cell[2], "attack": cell[3], **{f"{s}_gb": f[s].total / GB for s in STAGES},
                     "harness_gb": f["harness"].total / GB, "peak_gb": cell_peak(f) / GB, "floors": f})
    return rows


def fits(gb: float) -> str:
    """The smallest of the usual cards (24, 40, 80 GB) whose memory holds ``gb``, FITS of it usable."""
    return next((f"{g}" for g in (24, 40, 80) if gb <= FITS * g), "> 80")


def print_floors(rows: list[dict], title: str) -> None:
    """Each method's unlearning floor, each attack's, the evaluation's, then each cell's peak (method x attack)."""
    print(f"\n{title}\n")
    methods, attacks = list(dict.fromkeys(r["method"] for r in rows)), list(dict.fromkeys(r["attack"] for r in rows))
    first = {k: next(r for r in rows if r[k.split(":")[0]] == k.split(":")[1])
             for k in [f"method:{m}" for m in methods] + [f"attack:{a}" for a in attacks]}
    print("| stage | floor GB | what it holds (GB) |\n| --- | ---: | --- |")
    for m in methods:
        f = first[f"method:{m}"]["floors"]["unlearn"]
        print(f"| unlearn {m} | {f.total / 2 ** 30:.1f} | {_parts(f)} |")
    for a in attacks:
        f = first[f"attack:{a}"]["floors"]["attack"]
        print(f"| attack {a} | {f.total / 2 ** 30:.1f} | {_parts(f)} |")
    for name in ("eval", "harness"):
        f = rows[0]["floors"][name]
        print(f"| {'evaluation' if name == 'eval' else 'harness (beside attack and evaluation)'} | "
              f"{f.total / 2 ** 30:.1f} | {_parts(f)} |")
    peak = {(r["method"], r["attack"]): r["peak_gb"] for r in rows}
    print("\ncell peak GB (largest stage, + harness beside attack and evaluation) and the smallest card of 24 / 40 / "
          "80 GB it fits:\n")
    print("| method | " + " | ".join(attacks) + " |\n| --- |" + " ---: |" * len(attacks))
    for m in methods:
        print(f"| {m} | " + " | ".join(f"{peak[(m, a)]:.1f} ({fits(peak[(m, a)])})" if (m, a) in peak else "-"
                                       for a in attacks) + " |")


def print_summary(published: list[dict], saved: list[dict], every: list[dict]) -> None:
    """The README's table: each cell's peak at 512 px in bf16 with the published settings, with the savings that
    keep the numbers, and with every saving, and the smallest card of 24 / 40 / 80 GB each fits."""
    attacks = list(dict.fromkeys(r["attack"] for r in published))
    peak = [{(r["method"], r["attack"]): r["peak_gb"] for r in rows} for rows in (published, saved, every)]
    print("\ncell peak GB at 512 px, bf16: published / numbers kept / every saving (smallest card that fits):\n")
    print("| method | " + " | ".join(attacks) + " |\n| --- |" + " ---: |" * len(attacks))
    for m in dict.fromkeys(r["method"] for r in published):
        cells = []
        for a in attacks:
            if (m, a) not in peak[0]:
                cells.append("-")
                continue
            gb = [d[(m, a)] for d in peak]
            cells.append(" / ".join(f"{g:.0f}" for g in gb) + f" ({fits(gb[0])} / {fits(gb[1])} / {fits(gb[2])})")
        print(f"| {m} | " + " | ".join(cells) + " |")


def _parts(f) -> str:
    return ", ".join(f"{k} {v / 2 ** 30:.1f}" for k, v in f.parts.items())


def measure_grid(spec, p, model: str, run: str = "") -> None:
    """Run the grid on ``model`` in this process (or read the run directory ``run``) and print each stage's
    measured peak beside its floor."""
    from relearnbench.executors import run_local
    from relearnbench.memory import GB, peak_rss_mb, reset_peak
    from relearnbench.store import Store

    # the libraries' own memory belongs to the baseline: what a run has imported when it builds its first model,
    # the model classes' modules included (diffusers and transformers import them lazily: 0.13 GB more)
    import torch  # noqa: F401
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401
    from transformers import CLIPTextModel  # noqa: F401

    import relearnbench.builtins  # noqa: F401  (every plugin, as the command line registers them)

    reset_peak()
    baseline = peak_rss_mb()
    out = run or tempfile.mkdtemp(prefix="relearnbench-memory-")
    store = Store(out, create=not run)
    if not run:
        outcome = run_local(spec, store)
        if outcome.failed:
            print(f"{outcome.failed} cells failed: {outcome.failures[:3]}", file=sys.stderr)
    done = {cell for cell, status in store.statuses().items() if status == "done"}
    df = store.records_frame()
    store.close()
    cells = list({(c[2], c[3]): c for c in spec.cells() if tuple(c) in done}.values())  # one row a method x attack
    rows = floor_rows(p, cells, spec.dtype, p.model_config.resolution or None)
    print(f"\nmeasured on {model} ({out}), {spec.dtype}, {spec.device}; baseline (resident before any model) "
          f"{baseline / 1024:.2f} GB; GB = 2^30 bytes\n")
    print("| method | attack | stage | floor | + harness | measured - baseline | overhead |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        g = df[(df.method == r["method"]) & (df.attack == r["attack"])]
        if g.empty:
            continue
        measured = {"unlearn": g[g.stage == "pre"].peak_mb.max(), "attack": g[g.stage != "pre"].peak_mb.max(),
                    "eval": g.eval_peak_mb.max()}
        for stage in STAGES:
            floor, harness = r[f"{stage}_gb"], r["harness_gb"] if stage != "unlearn" else 0.0  # none while training
            got = (measured[stage] - baseline) / 1024
            over = got - floor - harness
            print(f"| {r['method']} | {r['attack']} | {stage} | {floor:.3f} | {harness:.3f} | {got:.3f} | "
                  f"{over:+.3f} ({over / floor:+.0%}) |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", default="paper-sd14")
    ap.add_argument("--model", default="", help="also run every cell on this model and print the measured peaks "
                                                "(tiny, toy; sd14-random on a quiet machine with ~20 GB free)")
    ap.add_argument("--run", default="", help="print the peaks this run directory recorded beside its cells' floors "
                                              "instead of running the grid (its own spec: model, settings, dtype)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="NAMESPACE.KEY=VALUE, as relearnbench run")
    args = ap.parse_args()

    from relearnbench.spec import load_grid

    grid = load_grid(args.grid)
    spec, p = spec_for(grid, None, args.sets)
    cells = sorted({(c[0], c[1], c[2], c[3], c[4]) for c in spec.cells()}, key=list(spec.cells()).index)
    print_floors(floor_rows(p, cells, "bf16"),
                 f"{args.grid}: the floor of each cell at 512 px, --dtype bf16 (GB = 2^30 bytes; trained UNet "
                 "weights, gradients and AdamW state in float32)")
    if spec.dtype not in ("bf16", "bfloat16"):
        print_floors(floor_rows(p, cells, spec.dtype), f"{args.grid}: the same at the grid's --dtype {spec.dtype}")
    sspec, sp = spec_for(grid, None, SAVINGS + args.sets)
    saved = floor_rows(sp, cells, "bf16")
    print_floors(saved, f"{args.grid}: at 512 px, bf16, with the savings {' '.join(SAVINGS)}")
    aspec, ap_ = spec_for(grid, None, SAVINGS + NUMERIC_SAVINGS + args.sets)
    every = floor_rows(ap_, cells, "bf16")
    print_floors(every, f"{args.grid}: at 512 px, bf16, with those and the savings that change the numbers "
                        f"{' '.join(NUMERIC_SAVINGS)}")
    print_summary(floor_rows(p, cells, "bf16"), saved, every)
    if args.run:
        from relearnbench.runner import cached_plan
        from relearnbench.spec import Spec
        from relearnbench.store import Store

        store = Store(args.run, create=False)
        rspec = Spec(**store.get_meta("spec"))
        store.close()
        measure_grid(rspec, cached_plan(rspec), rspec.models[0], run=args.run)
    elif args.model:
        mspec, mp = spec_for(grid, args.model, args.sets)
        measure_grid(mspec, mp, args.model)


if __name__ == "__main__":
    main()
