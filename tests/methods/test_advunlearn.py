"""AdvUnlearn trains the text encoder and nothing else; the text encoder reads train-role texts only (the
adversarial prompts included); the harness keeps its trained text encoder beside the UNet and loads it back."""

import dataclasses

import pytest
import torch

from relearnbench.methods.advunlearn import parameter_group
from relearnbench.testing import TINY_MODELS, tiny_concept, tiny_model

FAST = dict(steps=4, warmup=2, attack_steps=2, ddim_steps=4, retain_batch=2)


def states(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("arch", TINY_MODELS)
def test_the_text_encoder_trains_and_the_unet_does_not(arch, build, ctx):
    model = TINY_MODELS[arch]()
    encoders = [k for k in ("text_encoder", "text_encoder_2") if getattr(model, k) is not None]
    unet, before = states(model.unet), {k: states(getattr(model, k)) for k in encoders}
    build("advunlearn", advunlearn=FAST).unlearn(model, tiny_concept(), ctx)
    assert all(torch.equal(unet[k], v) for k, v in model.unet.state_dict().items()), "the UNet must not train"
    for k in encoders:
        after = getattr(model, k).state_dict()
        moved = {n for n in before[k] if not torch.equal(before[k][n], after[n])}
        # every layer's weights move (the first attention's query, the last MLP), the embeddings never
        assert any(".layers.0.self_attn.q_proj." in n for n in moved) and any(".mlp.fc2." in n for n in moved), k
        assert not any("embeddings." in n for n in moved), sorted(moved)
        assert all(v.dtype == torch.float32 for v in after.values()), "trained weights stay float32"
        assert not any(p.requires_grad for p in getattr(model, k).parameters())


def test_parameter_groups_follow_the_reference_choices():
    encoder = tiny_model().text_encoder
    names = lambda **kw: [n for n, _ in parameter_group(encoder, **kw)]  # noqa: E731
    full = names()
    assert any(n.startswith("final_layer_norm") for n in full) and not any("embeddings" in n for n in full)
    assert {n for n in full if n.startswith("encoder.")} == {n for n, _ in encoder.named_parameters()
                                                            if n.startswith("encoder.")}
    attn = names(component="attn")
    assert attn and all(".self_attn." in n for n in attn)  # no final layer norm without norm_layer
    assert all(".layers.0." in n for n in names(layers=(0,)))
    assert any(n.startswith("final_layer_norm") for n in names(component="ffn", norm_layer=True))


def test_the_text_encoder_reads_train_texts_only(build, ctx, monkeypatch):
    """Every row of token ids that reaches the text encoder, in training and in the inner attack, is a train prompt, a
    train benign prompt or "" (the attack's placeholders are start-of-text ids whose embeddings δ replaces); and the
    adversarial rows (a second start-of-text at position 1) did pass through it. Evaluation prompts never do."""
    concept = tiny_concept()
    model = tiny_model()
    tok = model.tokenizer
    special = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    as_tokens = lambda texts: {tuple(t for t in row if t not in special)  # noqa: E731
                               for row in tok(list(texts), padding="max_length").input_ids}
    rows = []
    model.text_encoder.register_forward_pre_hook(lambda module, args, kwargs: rows.extend(
        (args[0] if args else kwargs["input_ids"]).tolist()), with_kwargs=True)
    build("advunlearn", advunlearn=FAST).unlearn(model, concept, ctx)
    seen = {tuple(t for t in row if t not in special) for row in rows}
    assert seen <= as_tokens(concept.train + concept.train_benign + ("",)), seen - as_tokens(concept.train)
    assert not seen & as_tokens(concept.forget_texts + list(concept.benign))
    assert any(row[1] == tok.bos_token_id for row in rows), "no adversarial prompt reached the text encoder"
    assert as_tokens(concept.train_benign) <= seen  # the retain term read its prompts through the trained encoder


def test_the_harness_keeps_the_trained_text_encoder(tmp_path):
    """The unlearned model is saved as the UNet's file and a text-encoder file beside it, which the stats name; loaded
    back, it is the trained model, bit for bit and dtype for dtype. A UNet-only method saves the UNet alone."""
    from relearnbench.artifacts import Artifacts
    from relearnbench.runner import _unlearned, cached_plan, context, unlearn_key
    from relearnbench.spec import build_spec

    flags = {"models": "tiny", "concepts": "triangle", "methods": "advunlearn,esd", "attacks": "none", "jobs": 1}
    spec = build_spec(None, flags, {"advunlearn": FAST, "esd": dict(steps=2, batch_size=2, ddim_steps=4)})
    p, art = cached_plan(spec), Artifacts(tmp_path / "artifacts")
    models = {}
    for method in ("advunlearn", "esd"):
        key = unlearn_key(p, "tiny", "triangle", method, 0)
        for n in range(2):  # trained, then loaded from its files
            models[method, n], stats = _unlearned(p, art, context(p, "tiny", "triangle", 0, art), key, "tiny",
                                                  "triangle", method, 0)
        files = sorted(f.name for f in (tmp_path / "artifacts" / "unlearn").glob(f"{key}*.safetensors"))
        if method == "advunlearn":
            assert stats["text_encoders"] == ["text_encoder"]
            assert files == [f"{key}.safetensors", f"{key}.text_encoder.safetensors"]
        else:
            assert "text_encoders" not in stats and files == [f"{key}.safetensors"]
        for part in ("unet", "text_encoder"):
            a, b = (getattr(models[method, n], part).state_dict() for n in (0, 1))
            assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a), (method, part)
    base = tiny_model().text_encoder.state_dict()
    trained = models["advunlearn", 1].text_encoder.state_dict()
    assert any(not torch.equal(trained[k], base[k]) for k in base)
    assert all(torch.equal(v, base[k]) for k, v in models["esd", 1].text_encoder.state_dict().items())


def test_a_damaged_text_encoder_file_is_recomputed(tmp_path):
    from relearnbench.artifacts import Artifacts
    from relearnbench.runner import _unlearned, cached_plan, context, unlearn_key
    from relearnbench.spec import build_spec

    spec = build_spec(None, {"models": "tiny", "concepts": "triangle", "methods": "advunlearn", "attacks": "none",
                             "jobs": 1}, {"advunlearn": FAST})
    p, art = cached_plan(spec), Artifacts(tmp_path / "artifacts")
    key = unlearn_key(p, "tiny", "triangle", "advunlearn", 0)
    first, _ = _unlearned(p, art, context(p, "tiny", "triangle", 0, art), key, "tiny", "triangle", "advunlearn", 0)
    path = tmp_path / "artifacts" / "unlearn" / f"{key}.text_encoder.safetensors"
    path.write_bytes(path.read_bytes()[:-8])
    again, _ = _unlearned(p, art, context(p, "tiny", "triangle", 0, art), key, "tiny", "triangle", "advunlearn", 0)
    assert (tmp_path / "artifacts" / "corrupt" / "unlearn" / path.name).exists() and path.exists()
    a, b = first.text_encoder.state_dict(), again.text_encoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_no_retain_prompts_is_a_clear_error(build, ctx):
    from relearnbench.errors import UserError

    concept = dataclasses.replace(tiny_concept(), train_related=(), train_unrelated=())
    with pytest.raises(UserError, match="retain_weight=0"):
        build("advunlearn", advunlearn=FAST).unlearn(tiny_model(), concept, ctx)
