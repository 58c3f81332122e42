import torch

from relearnbench.testing import tiny_model


def _lora_b_norm(model):
    return sum(float(p.abs().sum()) for n, p in model.unet.named_parameters() if "lora_B" in n)


def test_lora_trains_an_adapter_and_leaves_the_unet_bit_identical(concept, build, make_ctx, recorder):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    rec = recorder(model, probe=_lora_b_norm)
    build("lora").run(model, concept, make_ctx(), rec)

    # evaluated with the adapter in place: B starts at zero and grows with training
    assert [s for s, _ in rec.calls] == [0, 2, 4]
    assert rec.probes[0] == 0.0 and rec.probes[1] > 0.0 and rec.probes[2] > 0.0
    after = model.unet.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not getattr(model.unet, "peft_config", None)
    assert type(model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q) is torch.nn.Linear


def test_lora_only_trains_the_adapter(concept, build, make_ctx, recorder):
    """Base weights stay untouched *during* the attack too, not merely restored afterwards."""
    model = tiny_model()
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}

    def base_unchanged(m):
        state = m.unet.state_dict()
        return all(torch.equal(state[k.replace("to_q.", "to_q.base_layer.").replace("to_k.", "to_k.base_layer.")
                                     .replace("to_v.", "to_v.base_layer.").replace("to_out.0.", "to_out.0.base_layer.")],
                               v) for k, v in before.items())

    rec = recorder(model, probe=base_unchanged)
    build("lora").run(model, concept, make_ctx(), rec)
    assert all(rec.probes)


def test_lora_lowers_the_denoising_loss_on_its_data(concept, build, make_ctx, recorder, denoising_loss):
    """As test_ft: the adapted model fits the attacker's images better at each curve point (measured with the
    adapter in place, inside evaluate(), on the images and captions the attack trains on)."""
    from relearnbench.data import attack_images

    model, ctx = tiny_model(), make_ctx()
    attack = build("lora", curve=[0, 10, 40], lr=1e-2, batch_size=4)
    images, captions = attack_images(concept, model, ctx, attack.config.images_per_prompt, seed=ctx.seed)
    rec = recorder(model, probe=lambda m: denoising_loss(m, images, captions))
    attack.run(model, concept, ctx, rec)
    before, mid, after = rec.probes
    assert before == denoising_loss(model, images, captions)  # step 0: the adapter's B is zero; removed after
    assert after < mid < before and after < 0.9 * before, rec.probes
