"""Method figures, printed (never asserted): (a) wall seconds of each method's whole unlearning run
with its preset, on the toy model; (b) seconds and FLOPs per step of plain ESD, of its
retain-only control ESD+retain and per outer step of ESD+meta (orders 1 and 2), and their ratios to ESD's (issue
18's target: a meta outer step ≤ 2× an ESD step). Where the time ratio matches the FLOP ratio, no overhead is left
to remove: the ratio is what the presets ask each step to compute.

    python benchmarks/methods.py                                   # toy, CPU: (a) and (b)
    python benchmarks/methods.py --model sd14-random --device cuda --dtype bf16   # (b) at SD scale

Per-step times are differences of two runs with different step counts, so setup (the teacher copy,
encoding the training images once, SalUn's mask) cancels. On sd14-random the training images come
from the toy concept's renderer resized to 512 px: the benchmark times the steps, not the data.
"""

from __future__ import annotations

import argparse
import time

TOY_METHODS = ("none", "esd", "salun", "uce", "esd+meta", "salun+meta", "uce+meta", "esd+retain")


def build(name: str, scale: str, sets: dict):
    from relearnbench.config import build
    from relearnbench.registry import METHODS

    return build(METHODS, name, scale, sets)


def timed_unlearn(name: str, base, scale: str, concept, sets: dict, device: str) -> float:
    import torch

    from relearnbench.api import Context
    from relearnbench.models import copy_model
    from relearnbench.runner import seed_everything

    method = build(name, scale, sets)
    model = copy_model(base)
    ctx = Context(device=device, dtype=None, seed=0, base=lambda: copy_model(base))
    seed_everything(0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    method.unlearn(model, concept, ctx)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def per_step(name: str, base, scale: str, concept, device: str, namespace: str, extra: dict, k1: int, k2: int,
             flops: bool = False):
    """Seconds per (outer) step: the time of a k2-step run minus a k1-step run, over k2 − k1. ``flops``: FLOPs
    per step instead, counted by torch's FlopCounterMode (convolutions, matmuls and attention, forward and
    backward) over the same two runs; at the same seed the steps counted draw what the timed steps drew."""
    from torch.utils.flop_counter import FlopCounterMode

    runs = {}
    for k in (k1, k2):
        sets = {ns: dict(v) for ns, v in extra.items()}
        sets.setdefault(namespace, {})["steps"] = k
        if flops:
            with FlopCounterMode(display=False) as counter:
                timed_unlearn(name, base, scale, concept, sets, device)
            runs[k] = counter.get_total_flops()
        else:
            runs[k] = timed_unlearn(name, base, scale, concept, sets, device)
            print(f"    {name} {extra or ''}: {k} steps in {runs[k]:.2f} s (setup included)", flush=True)
    return (runs[k2] - runs[k1]) / (k2 - k1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", help="frozen parts' dtype: fp32, bf16, fp16")
    p.add_argument("--concept", default="triangle")
    p.add_argument("--methods", default=",".join(TOY_METHODS), help="for the whole-run timings (toy only)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--steps", default="", help="k1,k2 for the per-step figures (default 5,15 toy; 2,5 sd14)")
    p.add_argument("--orders", default="1,2", help="meta orders to time per step")
    args = p.parse_args()

    import torch

    from relearnbench.concepts import load_concept
    from relearnbench.models import ModelConfig, load_model
    from relearnbench.registry import MODELS
    from relearnbench.spec import DTYPES

    if args.threads:
        torch.set_num_threads(args.threads)
    scale = MODELS.meta(args.model).get("preset", "sd14") if args.model in MODELS else "sd14"
    dtype = getattr(torch, DTYPES[args.dtype])
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
            print(f"  {name:<14} {timed_unlearn(name, base, scale, concept, {}, args.device):7.1f}", flush=True)

    k1, k2 = map(int, args.steps.split(",")) if args.steps else ((5, 15) if scale == "toy" else (2, 5))
    print(f"\n(b) seconds per step, {scale} presets (runs of {k1} and {k2} steps)")
    esd = per_step("esd", base, scale, concept, args.device, "esd", {}, k1, k2)
    esd_flops = per_step("esd", base, scale, concept, args.device, "esd", {}, k1, k2, flops=True)
    print(f"  esd (x_t sampled as the preset)  {esd:8.3f}   {esd_flops / 1e9:7.2f} GFLOP", flush=True)
    # esd+retain (ESD's step plus the retain terms at θ) splits the meta step's cost: the rest is the simulated
    # finetune and the terms at θ_FT
    rows = [("esd+retain", "esd+retain", {})] + [
        (f"esd+meta, order {o}", "esd+meta", {"meta": {"order": int(o)}}) for o in args.orders.split(",")]
    for label, name, extra in rows:
        try:
            meta = per_step(name, base, scale, concept, args.device, "meta", extra, k1, k2)
        except torch.OutOfMemoryError as e:  # order 2 keeps every inner step's graph
            print(f"  {label:<32} out of memory ({str(e).splitlines()[0][:80]})")
            torch.cuda.empty_cache()
            continue
        meta_flops = per_step(name, base, scale, concept, args.device, "meta", extra, k1, k2, flops=True)
        # the time ratio against the FLOP ratio: where they agree, the step spends its time in the work it asks for
        print(f"  {label:<32} {meta:8.3f}   {meta_flops / 1e9:7.2f} GFLOP   ratio to esd {meta / esd:5.2f}x "
              f"(FLOPs {meta_flops / esd_flops:5.2f}x)", flush=True)
        if args.device.startswith("cuda"):
            print(f"    peak GPU memory so far {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
