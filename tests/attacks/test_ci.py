import torch

from relearnbench.testing import tiny_model


def test_ci_learns_a_new_word_and_prompts_with_it(concept, build, make_ctx, recorder):
    model = tiny_model()
    unet_before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    vocab = len(model.tokenizer)
    init = model.text_encoder.get_input_embeddings().weight[model.tokenizer("shape").input_ids[1]].clone()
    rec = recorder()
    attack = build("ci", steps=5, lr=1e-2)
    attack.run(model, concept, make_ctx(), rec)

    token = attack.config.token
    token_id = model.tokenizer.convert_tokens_to_ids(token)
    assert len(model.tokenizer) == vocab + 1 and token_id == vocab
    learned = model.text_encoder.get_input_embeddings().weight[token_id]
    assert not torch.allclose(learned, init)  # trained away from the initial word
    (step, prompts), = rec.calls
    assert step is None and [p.text for p in prompts] == [f"{token} {t}" for t in concept.forget_texts]
    assert token_id in model.tokenizer(prompts[0].text).input_ids  # one word, not split into pieces
    after = model.unet.state_dict()
    assert all(torch.equal(after[k], unet_before[k]) for k in unet_before)


def test_lr_scales_by_batch_and_accumulation_as_pham_et_al(concept, build, make_ctx, recorder, monkeypatch):
    import pytest

    from relearnbench.config import instantiate
    from relearnbench.registry import ATTACKS

    sd = instantiate(ATTACKS.get("ci"), "sd14", {})
    assert (sd.config.steps, sd.config.batch_size, sd.config.grad_accum) == (5000, 4, 4)
    assert sd.lr() == pytest.approx(5e-3 * 4 * 4)  # esd/train.sh: --learning_rate=5.0e-03 --scale_lr
    assert instantiate(ATTACKS.get("ci"), "toy", {}).lr() == 5e-3
    seen, calls = [], []
    real = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda params, lr, **kw: seen.append(lr) or real(params, lr, **kw))
    import relearnbench.attacks.ci as ci

    real_loss = ci.denoising_loss
    monkeypatch.setattr(ci, "denoising_loss", lambda *a, **k: calls.append(1) or real_loss(*a, **k))
    build("ci", steps=2, lr=1e-3, batch_size=2, grad_accum=3, scale_lr=True).run(tiny_model(), concept, make_ctx(),
                                                                                 recorder())
    assert seen == [pytest.approx(1e-3 * 2 * 3)] and len(calls) == 2 * 3  # 3 micro-batches per step


def test_ci_lowers_the_denoising_loss_on_its_data(concept, build, make_ctx, recorder, denoising_loss):
    """Textual inversion fits the attacker's images: with the learned word their captions (``{token} {prompt}``)
    give a lower denoising loss than with the word it started from (``shape {prompt}``, one token, the same
    embedding before training), the UNet and every other embedding unchanged."""
    from relearnbench.data import attack_images

    model, ctx = tiny_model(), make_ctx()
    attack = build("ci", steps=60, lr=5e-2, batch_size=4, init_word="shape")
    images, texts = attack_images(concept, model, ctx, attack.config.images_per_prompt, seed=ctx.seed)
    assert len(model.tokenizer("shape").input_ids) == 3  # <start> shape <end>
    before = denoising_loss(model, images, [f"shape {t}" for t in texts])
    attack.run(model, concept, ctx, recorder())
    after = denoising_loss(model, images, [f"{attack.config.token} {t}" for t in texts])
    assert denoising_loss(model, images, [f"shape {t}" for t in texts]) == before
    assert after < 0.99 * before, (before, after)  # the text steers a random tiny UNet only a little
