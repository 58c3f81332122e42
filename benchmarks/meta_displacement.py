"""How far meta-unlearning's simulated finetune moves the weights: ‖θ_FT − θ‖ at order 1 (the authors'
M AdamW steps on a copy) and at order 2 (M SGD steps of size τ in the autograd graph), from the model as
loaded, with the model's meta presets. Printed, never asserted (tests/methods/test_meta.py asserts the
ratio on the tiny model).

    python benchmarks/meta_displacement.py                                   # toy model, CPU
    python benchmarks/meta_displacement.py --model sd14-random --device cuda --images 10
    python benchmarks/meta_displacement.py --model sd14-random --resolution 64 --images 4    # CPU, ~17 GB

On sd14-random the images are the toy concept's renders resized to the model's side (512 px, or
``--resolution``: the same weights): the figure is about the step sizes, not the data. ``--tau`` compares
another τ (the old default was τ = inner_lr). The model as loaded is θ itself (neither order changes it in
place), so the run holds one UNet besides the finetuned copy, its gradients and its AdamW state.
"""

from __future__ import annotations

import argparse
import time


def displacement(meta, model, concept, ctx) -> float:
    """‖θ_FT − θ‖ of one simulated finetune of the meta wrapper ``meta`` (a built ``X+meta``) from ``model`` as
    it is, at its config's order: order 1's AdamW steps on a copy, or order 2's SGD steps (first order)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from relearnbench import seeds
    from relearnbench.methods import meta_order2

    with torch.no_grad():
        meta.generator = torch.Generator().manual_seed(seeds.of(ctx.seed, "meta"))
        meta.data = meta._data(model, concept, ctx)
        theta = {n: p.detach() for n, p in model.unet.named_parameters()}  # θ as it is: neither order edits it
        with torch.enable_grad():
            if meta.config.order == 1:
                meta._allocate_copy(model, set(theta))
                meta._finetune_copy(model)
                moved = dict(meta.copy.named_parameters())
            else:
                with sdpa_kernel(SDPBackend.MATH):
                    moved = meta_order2.fast_weights(meta, model, second_order=False)
        out = torch.sqrt(sum(((moved[n].detach().float() - t.float()) ** 2).sum() for n, t in theta.items()))
    meta.release()
    return out.item()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy")
    p.add_argument("--device", default="cpu")
    p.add_argument("--concept", default="triangle")
    p.add_argument("--images", type=int, default=0, help="forget images (halved into train / held-out) and inner "
                                                         "batch = images / 2; 0 = the presets'")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tau", type=float, default=None, help="also measure order 2 at this τ")
    p.add_argument("--resolution", type=int, default=0, help="model.resolution of sd14-random (0 = its 512 px)")
    args = p.parse_args()

    import torch

    from relearnbench.api import Context
    from relearnbench.data import GenerateConfig
    from relearnbench.evaluate import SampleConfig
    from relearnbench.concepts import load_concept
    from relearnbench.config import build
    from relearnbench.models import ModelConfig, copy_model, load_model
    from relearnbench.methods.meta_order2 import tau
    from relearnbench.registry import METHODS, MODELS

    scale = MODELS.meta(args.model).get("preset", "sd14") if args.model in MODELS else "sd14"
    base = load_model(args.model, ModelConfig(resolution=args.resolution), device=args.device)
    concept = load_concept(args.concept)
    sets = {"meta": {}}
    if args.images:
        sets["meta"] = dict(forget_images=args.images, retain_images=2, inner_batch=max(1, args.images // 2))
    n = sum(p.numel() for p in base.unet.parameters())
    print(f"model {args.model} ({scale} presets, {n / 1e6:.1f} M UNet weights) on {args.device}, concept {concept.name}")
    variants = [("order 1 (AdamW, inner_lr)", {"order": 1}), ("order 2 (SGD, τ default)", {"order": 2})]
    if args.tau is not None:
        variants.append((f"order 2 (SGD, τ = {args.tau:g})", {"order": 2, "tau": args.tau}))
    for label, extra in variants:
        figures = []
        for seed in map(int, args.seeds.split(",")):
            meta = build(METHODS, "none+meta", scale, {"meta": {**sets["meta"], **extra}})
            t0 = time.perf_counter()
            ctx = Context(device=args.device, dtype=None, seed=seed, base=lambda: copy_model(base),
                          sample_config=SampleConfig(), generate_config=GenerateConfig())
            figures.append(displacement(meta, base, concept, ctx))
            seconds = time.perf_counter() - t0
        c = meta.config
        print(f"  {label:<28} ‖θ_FT − θ‖ = {' / '.join(f'{f:.4g}' for f in figures)}   (seeds {args.seeds}; "
              f"inner_lr {c.inner_lr:g}, τ {tau(meta, base):.4g}, {c.inner_steps} steps of {c.inner_batch}, "
              f"clip {c.max_grad_norm:g}; {seconds:.1f} s per seed)", flush=True)
        del meta
        torch.cuda.empty_cache() if args.device.startswith("cuda") else None


if __name__ == "__main__":
    main()
