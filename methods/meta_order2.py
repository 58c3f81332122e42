"""Meta-unlearning at order 2: the paper's objective (Gao et al., arXiv 2410.12777), for ``meta.order = 2``.

    J(θ) = Σ γ L(θ; D_r) − Σ γ' L(θ_FT(θ); D),   θ_FT = M plain SGD steps of size τ on forget-train images

θ_FT stays in the autograd graph (``torch.func.functional_call``), so the outer gradient flows through the
inner updates. Each inner gradient is scaled to norm ``max_grad_norm`` (differentiably: a clip when it is
longer, as order 1 clips, and a stretch when it is shorter, since an Adam step's length does not depend on the
gradient's scale); τ defaults to √2·inner_lr·√N / max_grad_norm for the N UNet weights (``methods/meta.py``'s
docstring says why). The wrapper, its data and terms, and order 1 (the authors' procedure) are in
``methods/meta.py``; these functions take the ``Meta`` instance that holds them.
"""

from __future__ import annotations

import torch
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from relearnbench.api import Model
from relearnbench.diffusion import denoising_loss


def objective(meta, model: Model, named: list, second_order: bool = True) -> torch.Tensor:
    """J(θ) = Σ γ L(θ; D_r) − Σ γ' L(θ_FT(θ); D), θ_FT = M SGD steps kept in the graph
    (``second_order=False`` detaches the inner gradients: the first-order approximation).

    Math attention: the fused CPU and CUDA kernels have no double backward."""
    J = torch.zeros((), device=model.unet.device)
    with sdpa_kernel(SDPBackend.MATH):
        for loss in meta.losses(model, model.unet, meta.terms("theta")):
            J = J + loss
        if not meta.meta_terms():
            return J
        fast = fast_weights(meta, model, second_order)
        for loss in meta.losses(model, At(model.unet, fast), meta.terms("ft")):
            J = J + loss
    return J


def tau(meta, model: Model) -> float:
    """τ: as set, or √2 × the length of one Adam step of inner_lr over the N UNet weights (inner_lr·√N),
    divided by the norm each inner gradient is scaled to."""
    c = meta.config
    n = sum(p.numel() for p in model.unet.parameters())
    return c.tau or (2 * n) ** 0.5 * c.inner_lr / (c.max_grad_norm or 1.0)


def fast_weights(meta, model: Model, second_order: bool = True) -> dict:
    """θ_FT: M SGD steps of size τ on forget-train images, each gradient scaled to norm ``max_grad_norm``
    (none when 0), kept in the autograd graph when ``second_order``."""
    c, g, step_size = meta.config, meta.generator, tau(meta, model)
    # trained weights enter as themselves, the others as fresh leaves the inner step may move (inner_train "full"),
    # or as they are, fixed (inner_train "base": the inner steps move the trained weights alone)
    full = c.inner_train == "full"
    fast = {n: p if p.requires_grad or not full else p.detach().requires_grad_(True)
            for n, p in model.unet.named_parameters()}
    moving = [n for n, v in fast.items() if v.requires_grad]
    for x0, cond in meta.data["forget_train"].batches(c.inner_steps, c.inner_batch, g):
        loss = denoising_loss(model, x0, cond, unet=At(model.unet, fast), generator=g)
        grads = torch.autograd.grad(loss, [fast[n] for n in moving], create_graph=second_order, allow_unused=True)
        step = step_size
        if c.max_grad_norm:
            norm = torch.sqrt(sum((gr.float() ** 2).sum() for gr in grads if gr is not None))
            step = step_size * c.max_grad_norm / (norm + 1e-12)
        fast = {**fast, **{n: fast[n] - step * gr for n, gr in zip(moving, grads) if gr is not None}}
    return fast


class At:
    """A UNet evaluated at other weights (``torch.func.functional_call``), usable wherever the
    diffusion math takes a UNet."""

    def __init__(self, unet, weights: dict):
        self.unet, self.weights = unet, weights
        self.dtype, self.device, self.config = unet.dtype, unet.device, unet.config

    def __call__(self, *args, **kwargs):
        return functional_call(self.unet, self.weights, args, kwargs)
