"""Method figures, printed (never asserted): (a) wall seconds of each method's whole unlearning run
with its preset, on the toy model; (b) seconds and FLOPs per step of plain ESD, of its
retain-only control ESD+retain and per outer step of ESD+meta (orders 1 and 2), and their ratios to ESD's (issue
18's target: a meta outer step ≤ 2× an ESD step). Where the time ratio matches the FLOP ratio, no overhead is left
to remove: the ratio is what the presets ask each step to compute.

    python benchmarks/methods.py                                   # toy, CPU: (a) and (b)
    python benchmarks/methods.py --model sd14-random --device cuda --dtype bf16   # (b) at SD scale
    python benchmarks/methods.py --methods none --set meta.batch_size=4 --set meta.inner_batch=4  # another preset

Per-step times are read inside the training loop, so setup (the teacher copy, encoding the training images
once, SalUn's mask) is not counted. The rows run in turn for several rounds and each step counts its fastest
round: on a machine whose speed drifts by a third within minutes, the difference of two whole runs (the
method until 2026-12-02) put a meta step at 1.9x-3.9x an ESD step from one run to the next. FLOPs are
counted, not timed, and do not drift; they are read at the same place in the loop, over the same steps. On sd14-random the training images come from the toy concept's renderer
resized to 512 px: the benchmark times the steps, not the data.
"""

from __future__ import annotations

import argparse
import time

TOY_METHODS = ("none", "esd", "salun", "uce", "esd+meta", "salun+meta", "uce+meta", "esd+retain")


def build(name: str, scale: str, sets: dict):
    from relearnbench.config import build
    from relearnbench.registry import METHODS

    return build(METHODS, name, scale, sets)


def clocked_unlearn(name: str, base, scale: str, concept, sets: dict, device: str,
                    flops: bool = False) -> tuple[float, list[float]]:
    """One unlearning run: (its wall seconds, what each (outer) step cost), the step's cost read where the loop
    takes its next step (``ctx.track``), so the setup before the loop (the teacher copy, the training images,
    SalUn's mask) and the release after it are not a step's. ``flops``: each step's FLOPs instead of its seconds,
    counted by torch's FlopCounterMode (convolutions, matmuls and attention, forward and backward); at the same
    seed the counted steps draw what the timed ones draw."""
    import contextlib

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from relearnbench.api import Context
    from relearnbench.data import GenerateConfig
    from relearnbench.evaluate import SampleConfig
    from relearnbench.models import copy_model
    from relearnbench.runner import seed_everything

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    counter = FlopCounterMode(display=False) if flops else None
    marks: list[float] = []

    def mark():
        sync()
        marks.append(counter.get_total_flops() if counter else time.perf_counter())

    def track(iterable, description, total=None):
        for item in iterable:
            mark()
            yield item
        mark()

    method, model = build(name, scale, sets), copy_model(base)
    ctx = Context(device=device, dtype=None, seed=0, base=lambda: copy_model(base),
                  sample_config=SampleConfig(), generate_config=GenerateConfig())
    ctx.track = track
    seed_everything(0)
    sync()
    t0 = time.perf_counter()
    with counter or contextlib.nullcontext():
        method.unlearn(model, concept, ctx)
    sync()
    return time.perf_counter() - t0, [b - a for a, b in zip(marks, marks[1:])]


def with_steps(sets: dict, namespace: str, steps: int) -> dict:
    out = {ns: dict(v) for ns, v in sets.items()}
    out.setdefault(namespace, {})["steps"] = steps
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", help="frozen parts' dtype: fp32, bf16, fp16")
    p.add_argument("--concept", default="triangle")
    p.add_argument("--methods", default=",".join(TOY_METHODS), help="for the whole-run timings (toy only)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--steps", default="", help="k1,k2: steps k1..k2 of k2-step runs are timed and counted "
                                               "(default 5,15 toy; 2,5 sd14)")
    p.add_argument("--rounds", type=int, default=0, help="interleaved timing rounds (default 3 toy, 1 sd14)")
    p.add_argument("--orders", default="1,2", help="meta orders to time per step")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NS.KEY=VALUE",
                   help="a preset value for every run, as `relearnbench run --set` (e.g. meta.batch_size=8)")
    args = p.parse_args()

    import torch

    from relearnbench.concepts import load_concept
    from relearnbench.config import parse_sets
    from relearnbench.models import ModelConfig, load_model
    from relearnbench.registry import MODELS
    from relearnbench.spec import DTYPES

    if args.threads:
        torch.set_num_threads(args.threads)
    scale = MODELS.meta(args.model).get("preset", "sd14") if args.model in MODELS else "sd14"
    dtype = getattr(torch, DTYPES[args.dtype])
    sets = parse_sets(args.sets)
    t0 = time.perf_counter()
    base = load_model(args.model, ModelConfig(), device=args.device, dtype=dtype)
    concept = load_concept(args.concept)
    print(f"model {args.model} ({scale} presets) on {args.device}, frozen parts {dtype}, "
          f"{torch.get_num_threads()} threads; loaded in {time.perf_counter() - t0:.1f} s")
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name()}")

    if scale == "toy":
        print("\n(a) whole unlearning run with the toy preset (seconds)")
        for name in args.methods.split(","):
            print(f"  {name:<14} {clocked_unlearn(name, base, scale, concept, sets, args.device)[0]:7.1f}", flush=True)

    k1, k2 = map(int, args.steps.split(",")) if args.steps else ((5, 15) if scale == "toy" else (2, 5))
    rounds = args.rounds or (3 if scale == "toy" else 1)
    print(f"\n(b) seconds and FLOPs per step, {scale} presets: steps {k1}..{k2} of {k2}-step runs, each step's "
          f"fastest of {rounds} interleaved round(s)")
    # esd+retain (ESD's step plus the retain terms at θ) splits the meta step's cost: the rest is the simulated
    # finetune and the terms at θ_FT
    rows = [("esd (x_t sampled as the preset)", "esd", "esd", sets), ("esd+retain", "esd+retain", "meta", sets)] + [
        (f"esd+meta, order {o}", "esd+meta", "meta", {**sets, "meta": {**sets.get("meta", {}), "order": int(o)}})
        for o in args.orders.split(",")]
    # the rows in turn, round after round: a slow spell of the machine (this one's speed drifts within minutes)
    # falls on one round of every row, and each step's fastest round leaves it out
    times: dict[str, list[list[float]]] = {label: [] for label, *_ in rows}
    for _ in range(rounds):
        for label, name, ns, extra in list(rows):
            try:
                times[label].append(clocked_unlearn(name, base, scale, concept, with_steps(extra, ns, k2),
                                                    args.device)[1])
            except torch.OutOfMemoryError as e:  # order 2 keeps every inner step's graph
                print(f"  {label:<32} out of memory ({str(e).splitlines()[0][:80]})")
                torch.cuda.empty_cache()
                rows = [r for r in rows if r[0] != label]
                del times[label]
    esd = esd_flops = None
    for label, name, ns, extra in rows:
        seconds = sum(map(min, list(zip(*times[label]))[k1:k2])) / (k2 - k1)
        flops = sum(clocked_unlearn(name, base, scale, concept, with_steps(extra, ns, k2), args.device,
                                    flops=True)[1][k1:k2]) / (k2 - k1)
        esd, esd_flops = esd or seconds, esd_flops or flops
        # the time ratio against the FLOP ratio: where they agree, the step spends its time in the work it asks for
        ratio = f"ratio to esd {seconds / esd:5.2f}x (FLOPs {flops / esd_flops:5.2f}x)" if name != "esd" else ""
        print(f"  {label:<32} {seconds:8.3f} s {flops / 1e9:8.2f} GFLOP   {ratio}", flush=True)
        if args.device.startswith("cuda"):
            print(f"    peak GPU memory so far {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
