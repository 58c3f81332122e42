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
