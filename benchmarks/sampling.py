"""Sampling throughput (images per second) through relearnbench.diffusion.sample, the path every
evaluation takes. Printed, never asserted.

    python benchmarks/sampling.py                                              # toy, CPU
    python benchmarks/sampling.py --model sd14-random --device cuda --dtype bf16 --steps 50 --batch 8
"""

from __future__ import annotations

import argparse
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="toy")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--images", type=int, default=0, help="images to time (default: 2 batches)")
    a = p.parse_args()

    import torch

    from relearnbench.api import Prompt
    from relearnbench.diffusion import sample
    from relearnbench.models import ModelConfig, load_model
    from relearnbench.spec import DTYPES

    dtype = getattr(torch, DTYPES[a.dtype])
    model = load_model(a.model, ModelConfig(), device=a.device, dtype=dtype)
    if dtype != torch.float32:  # sampling only: the UNet may be half precision too
        model.unet.to(dtype)
    n = a.images or 2 * a.batch
    prompts = [Prompt(f"a photo of a red triangle number {i}") for i in range(n)]
    sample(model, prompts[:a.batch], 1, steps=2, guidance=5.0, seed=0, batch_size=a.batch)  # warm-up
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    images = sample(model, prompts, 1, steps=a.steps, guidance=5.0, seed=0, batch_size=a.batch)
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    extra = (f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB on {torch.cuda.get_device_name()}"
             if a.device.startswith("cuda") else f", {torch.get_num_threads()} CPU threads")
    print(f"{a.model} {tuple(images.shape[1:])} {a.dtype}: {n} images, DDIM {a.steps} steps, CFG, batch {a.batch}: "
          f"{dt:.1f} s = {n / dt:.2f} images/s{extra}")


if __name__ == "__main__":
    main()
