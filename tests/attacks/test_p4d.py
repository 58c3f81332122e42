"""P4D: where its learnable tokens go (P4D-N, P4D-K), and the objective it minimises: the unlearned model's
prediction under P* against the original model's under P, zero when the two models and prompts agree."""

import torch

from relearnbench.api import Prompt
from relearnbench.attacks.p4d import P4D, nearest_tokens
from relearnbench.diffusion import encode_images, encode_text_frozen, input_embeddings, tokenize
from relearnbench.testing import tiny_model


def test_layouts_of_p4d_n_and_p4d_k(build):
    model = tiny_model()
    tok = model.tokenizer
    words = tokenize(model, ["a red triangle"])[0, 1:4].tolist()
    ids, learn = build("p4d", prompt_len=5).layout(model, [Prompt("a red triangle")])
    assert learn[0].nonzero().flatten().tolist() == [1, 2, 3, 4, 5] and ids[0, 6] == tok.eos_token_id
    ids, learn = build("p4d-k").layout(model, [Prompt("a red triangle")])  # every_k = 3: 3 words, 2 new tokens
    assert learn[0].nonzero().flatten().tolist() == [1, 5]  # <start> NEW a red triangle NEW <end>
    assert ids[0, 2:5].tolist() == words and ids[0, 6] == tok.eos_token_id


def test_nearest_tokens_by_cosine():
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -10.0]])  # the scale of a row does not count
    queries = torch.tensor([[5.0, 0.1], [0.1, -3.0], [0.2, 0.3], [-2.0, 1.0]])
    assert nearest_tokens(queries, table).tolist() == [0, 3, 1, 2]


def test_the_objective_is_zero_when_p_star_is_p_on_the_original_model(build):
    original, perturbed = tiny_model(), tiny_model()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # an "unlearned" model: other cross-attention values
        for name, p in perturbed.unet.named_parameters():
            if ".attn2.to_v." in name:
                p.add_(torch.randn(p.shape, generator=g))
    text = "a red triangle"
    attack = build("p4d", prompt_len=3)  # P4D-N with as many new tokens as P has words
    ids, learn = attack.layout(original, [Prompt(text)])
    tables = [t.detach().float() for t in input_embeddings(original)]
    e = tables[0][tokenize(original, [text])[0, 1:4]].clone().requires_grad_(True)  # P*'s tokens are P's
    x0 = encode_images(original, torch.rand(1, 3, 16, 16))
    c = encode_text_frozen(original, [text])

    def objective(model):
        return P4D.objective(model, original, ids, learn, e, tables, x0, c, torch.Generator().manual_seed(0))

    assert objective(original).item() < 1e-10
    loss = objective(perturbed)
    assert loss.item() > 1e-4
    loss.backward()  # straight through the projection to the soft embeddings
    assert e.grad is not None and e.grad.abs().sum() > 0
