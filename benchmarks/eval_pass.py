"""One evaluation pass at the paper's scale, against what the UNet's arithmetic allows. Printed, never asserted.

    python benchmarks/eval_pass.py --model sd14-random --device cuda --dtype bf16      # 142 prompts, 50 LMS steps
    python benchmarks/eval_pass.py --model tiny --prompts 4 --steps 2 --batch 2        # the script itself, on CPU

UnlearnDiffAtk's evaluation samples its 142 nudity prompts with 50 LMS steps at guidance 7.5: 142 x 50 x 2 UNet
images (classifier-free guidance doubles the batch). The pass goes through ``relearnbench.diffusion.sample`` with
``sampler="unlearndiffatk"``, as the harness's evaluation does (``sample.sampler``). The bound is the measured dense matmul rate of the device in
the dtype, divided by the UNet's FLOPs per image (counted by torch's FlopCounterMode on one call); the text encoder
and the VAE decode are left out of the bound (on SD-1.4 the UNet is over 90 % of a sample's arithmetic), so the
ratio is an upper estimate of how much of the device the pass uses.
"""

from __future__ import annotations

import argparse
import time


def sync(device: str):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_flops_per_s(device: str, dtype, n: int, reps: int = 10) -> float:
    import torch

    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def unet_flops(model, batch: int) -> int:
    """FLOPs of one UNet call on ``batch`` latents, as torch counts them (matmuls and convolutions)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from relearnbench.diffusion import encode_text_frozen, predict

    unet = model.unet
    c = unet.config
    x = torch.randn(batch, c.in_channels, c.sample_size, c.sample_size, device=unet.device, dtype=unet.dtype)
    cond = encode_text_frozen(model, [""] * batch).to(unet.device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        predict(unet, x, torch.full((batch,), 500, device=unet.device), cond)
    return counter.get_total_flops()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="sd14-random")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--prompts", type=int, default=142)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--batch", type=int, default=16, help="prompts per sampler call (the UNet sees twice as many)")
    p.add_argument("--matmul", type=int, default=8192, help="side of the square matmul that measures the device")
    a = p.parse_args()

    import torch

    from relearnbench.api import Prompt
    from relearnbench.diffusion import sample
    from relearnbench.models import ModelConfig, load_model
    from relearnbench.spec import DTYPES

    dtype = getattr(torch, DTYPES[a.dtype])
    model = load_model(a.model, ModelConfig(), device=a.device, dtype=dtype)
    model.unet.to(dtype)  # sampling only: the UNet may be half precision too
    prompts = [Prompt(f"a photo of a person, number {i}", seed=i, guidance=a.guidance) for i in range(a.prompts)]

    def run(prompts, steps):  # the harness's evaluation sampler (sample.sampler = "unlearndiffatk")
        images = sample(model, prompts, 1, steps=steps, guidance=a.guidance, seed=0, batch_size=a.batch,
                        sampler="unlearndiffatk")
        sync(a.device)
        return len(images)

    run(prompts[:a.batch], 2)  # warm-up: kernels, allocator
    if a.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    n = run(prompts, a.steps)
    dt = time.perf_counter() - t0

    per_image_step = unet_flops(model, 2)  # CFG: two UNet images per sampled image and step
    peak = matmul_flops_per_s(a.device, dtype, a.matmul)
    bound = peak / (per_image_step * a.steps)
    where = (f"{torch.cuda.get_device_name()}, peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
             if a.device.startswith("cuda") else f"{torch.get_num_threads()} CPU threads")
    print(f"{a.model} {model.resolution}px {a.dtype}: {n} prompts, {a.steps} LMS steps, guidance {a.guidance}, "
          f"batch {a.batch}: {dt:.1f} s = {n / dt:.3f} images/s ({where})")
    print(f"UNet {per_image_step / 2 / 1e9:.3g} GFLOP per call per image; {a.dtype} matmul {peak / 1e12:.3g} TFLOP/s "
          f"-> bound {bound:.3f} images/s; this pass reaches {100 * n / dt / bound:.0f} % of it")


if __name__ == "__main__":
    main()
