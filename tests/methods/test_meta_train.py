"""meta.train: which UNet weights the outer and inner steps train. ``esd-u-1+meta`` trains ESD-u's weights
(cross-attention stays), ``esd-u-1+meta-full`` every weight, as the authors' scripts pass --finetuning_method
full; ``esd-u-3+meta-full`` at the sd14 presets is scripts/esd_meta.sh."""

import torch

from relearnbench.testing import tiny_concept, tiny_model


def moved(build, ctx, name):
    model, original = tiny_model(), tiny_model()
    build(name).unlearn(model, tiny_concept(), ctx)
    before = dict(original.unet.named_parameters())
    return {n for n, p in model.unet.named_parameters() if not torch.equal(p, before[n])}


def test_full_trains_what_base_leaves(build, ctx):
    base, full = moved(build, ctx, "esd-u-1+meta"), moved(build, ctx, "esd-u-1+meta-full")
    xattn = {n for n in full if ".attn2." in n}
    assert xattn and not any(".attn2." in n for n in base)
    assert base < full


def test_the_authors_esd_meta_is_named():
    from relearnbench.config import build
    from relearnbench.registry import METHODS

    m = build(METHODS, "esd-u-3+meta-full", "sd14", {})
    assert (m.config.train, m.base.config.eta, m.config.weight_decay, m.config.max_grad_norm) == ("full", 3.0, 1e-4, 1.0)
    assert (m.config.steps, m.config.lr, m.config.preset) == (1500, 1e-5, "authors-effective")
    assert build(METHODS, "esd-u-1+meta", "sd14", {}).config.train == "base"
