"""The opt-in memory savings that change the numbers (issue 35 item 4): AdamW's moments in bfloat16 (or 8 bits
through bitsandbytes on CUDA), ``unlearn.optimizer_state``; meta's simulated finetune on the trained weights
only, ``meta.inner_train=base``. Each is off by default and enters an unlearned model's key only when set."""

import dataclasses

import pytest
import torch

from relearnbench.errors import UserError
from relearnbench.memory import optimizer_with_state
from relearnbench.testing import tiny_concept, tiny_model


def _weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(40, 30, generator=g).requires_grad_(True), torch.randn(30, generator=g).requires_grad_(True)]


def test_bfloat16_moments_run_torch_s_adamw_update_and_store_half_the_bytes():
    """The first step is torch's AdamW to the bit (the update is computed in float32, only the stored moments are
    rounded); later steps differ in the last bits of the moments, so the weights stay within 1 % of the step."""
    a, b = _weights(), [w.detach().clone().requires_grad_(True) for w in _weights()]
    ref = torch.optim.AdamW(a, lr=1e-2, weight_decay=1e-4)
    opt = optimizer_with_state(torch.optim.AdamW(b, lr=1e-2, weight_decay=1e-4), "bfloat16")
    start = [w.detach().clone() for w in a]
    for step in range(5):
        for ws, o in ((a, ref), (b, opt)):
            o.zero_grad()
            sum((w ** 3).sin().sum() for w in ws).backward()
            o.step()
        if step == 0:
            assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, b))
    moved = max((x - s).abs().max() for x, s in zip(a, start))
    assert max((x - y).abs().max() for x, y in zip(a, b)) < 0.01 * moved
    for w in b:
        state = opt.state[w]
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.bfloat16
        assert ref.state[a[0]]["exp_avg"].dtype == torch.float32
    assert optimizer_with_state(ref, "float32") is ref  # the default: the method's own optimizer, untouched


def test_8bit_moments_are_refused_on_the_cpu_with_the_alternative():
    with pytest.raises(UserError, match="runs on CUDA.*unlearn.optimizer_state=bfloat16"):
        optimizer_with_state(torch.optim.AdamW(_weights(), lr=1e-3), "8bit", "cpu")
    with pytest.raises(UserError, match="keeps AdamW's moments only"):
        optimizer_with_state(torch.optim.SGD(_weights(), lr=1e-3), "bfloat16")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="pip install bitsandbytes"):
            optimizer_with_state(torch.optim.AdamW(_weights(), lr=1e-3), "8bit", "cuda")


def _unlearn(build, ctx, name, **sets):
    model = tiny_model()
    method = build(name, **sets)
    method.unlearn(model, tiny_concept(), ctx)
    return method, {k: v.detach().clone() for k, v in model.unet.state_dict().items()}


def test_esd_with_bfloat16_moments_moves_the_same_weights_close_to_float32(build, ctx):
    original = tiny_model().unet.state_dict()
    _, plain = _unlearn(build, ctx, "esd-u-1")
    _, half = _unlearn(build, dataclasses.replace(ctx, optimizer_state="bfloat16"), "esd-u-1")
    changed = {k for k in plain if not torch.equal(plain[k], original[k])}
    assert changed == {k for k in half if not torch.equal(half[k], original[k])}
    assert any(not torch.equal(plain[k], half[k]) for k in changed)
    step = max((plain[k] - original[k]).abs().max() for k in changed)
    assert max((plain[k] - half[k]).abs().max() for k in changed) < 0.05 * step


def test_meta_inner_train_base_shares_the_untrained_weights_and_trains_the_rest(build, ctx):
    """θ' holds new tensors, gradients and AdamW state for ESD-u's weights alone and reads θ's own cross-attention
    weights; the unlearned weights differ from the full simulated finetune's, cross-attention moves in neither."""
    model = tiny_model()
    method = build("esd-u-1+meta", meta={"inner_train": "base"})
    named = method.prepare(model, tiny_concept(), ctx)
    trained = {n for n, _ in named}
    theta = dict(model.unet.named_parameters())
    copy = dict(method.copy.named_parameters())
    assert trained and any(".attn2." in n for n in theta) and not any(".attn2." in n for n in trained)
    assert all((copy[n] is theta[n]) == (n not in trained) for n in theta)
    assert {id(p) for p in method.copy_params} == {id(copy[n]) for n in trained}
    method._finetune_copy(model)
    assert {id(p) for p in method.inner_opt.state} == {id(copy[n]) for n in trained}
    method.release()

    original = tiny_model().unet.state_dict()
    _, full = _unlearn(build, ctx, "esd-u-1+meta")
    _, base = _unlearn(build, ctx, "esd-u-1+meta", meta={"inner_train": "base"})
    assert any(not torch.equal(full[k], base[k]) for k in full)
    for w in (full, base):
        assert all(torch.equal(w[k], original[k]) for k in w if ".attn2." in k)


def test_meta_inner_train_base_at_order_2_moves_only_the_trained_weights_in_the_inner_steps(build, ctx):
    from relearnbench.methods.meta_order2 import fast_weights

    model = tiny_model()
    method = build("esd-u-1+meta", meta={"order": 2, "inner_train": "base"})
    named = method.prepare(model, tiny_concept(), ctx)
    model.unet.requires_grad_(False)
    for _, p in named:
        p.requires_grad_(True)
    fast = fast_weights(method, model)
    theta = dict(model.unet.named_parameters())
    trained = {n for n, _ in named}
    assert all((fast[n] is theta[n]) == (n not in trained) for n in theta)
    method.release()


def test_the_savings_enter_the_key_only_when_set():
    from relearnbench.runner import plan, unlearn_key
    from relearnbench.spec import Spec

    def key(sets):
        p = plan(Spec(models=["toy"], concepts=["triangle"], methods=["esd+meta"], attacks=["none"],
                      metrics=["asr"], sets=sets))
        return unlearn_key(p, "toy", "triangle", "esd+meta", 0), p.method("esd+meta", "toy").describe()

    default, described = key({})
    assert "inner_train" not in described["config"]["meta"]
    assert key({"unlearn": {"optimizer_state": "float32"}, "meta": {"inner_train": "full"}})[0] == default
    half, _ = key({"unlearn": {"optimizer_state": "bfloat16"}})
    inner, described = key({"meta": {"inner_train": "base"}})
    assert len({default, half, inner}) == 3 and described["config"]["meta"]["inner_train"] == "base"


def test_meta_with_bfloat16_moments_holds_no_inner_state_or_gradient_between_finetunes(build, ctx):
    """The simulated finetune's bfloat16 moments are made as its gradients go and dropped after it (a fresh state
    each outer step, as the zeroed float32 one); its float32 moments stay allocated, zeroed each time."""
    for c in (ctx, dataclasses.replace(ctx, optimizer_state="bfloat16")):
        model = tiny_model()
        method = build("esd-u-1+meta", meta={"inner_steps": 1})
        method.prepare(model, tiny_concept(), c)
        before = {n: p.detach().clone() for n, p in method.copy.named_parameters()}
        method._finetune_copy(model)
        assert any(not torch.equal(p, before[n]) for n, p in method.copy.named_parameters())
        if c.optimizer_state == "bfloat16":
            assert not method.inner_opt.state and all(p.grad is None for p in method.copy_params)
        else:
            assert len(method.inner_opt.state) == len(method.copy_params)
        method.release()
