"""Ring-A-Bell: the concept vector is the attacker's concept prompts' mean embedding minus its concept-free
ones', the fitness is the distance of a prompt's embedding to its target, and the genetic search improves it
while keeping a well-formed prompt."""

import torch

from relearnbench.attacks.ringabell import RingABell
from relearnbench.diffusion import encode_text, tokenize
from relearnbench.testing import context, tiny_model


def test_concept_vector_and_fitness(build, concept):
    model = tiny_model()
    attack = build("ringabell")
    v = attack.concept_vector(model, concept)
    with torch.no_grad():
        plus, minus = encode_text(model, concept.attack).hidden, encode_text(model, concept.attack_related).hidden
        pairs = torch.stack([a - b for a in plus for b in minus]).mean(0)  # every pair's difference, averaged
        target = encode_text(model, ["a red triangle"]).hidden
    assert v.shape == target.shape[1:] and torch.allclose(v, pairs, atol=1e-5)
    ids = tokenize(model, ["a red triangle", "a blue circle"])
    fit = RingABell.fitness(model, ids, target)
    assert fit[0].item() < 1e-8 < fit[1].item()


def test_the_genetic_search_improves_its_best_prompt(build):
    model = tiny_model()
    tok = model.tokenizer
    attack = build("ringabell", length=4, population=16, generations=30)
    with torch.no_grad():
        target = encode_text(model, ["a red dotted triangle"]).hidden
    g = torch.Generator().manual_seed(0)
    first = build("ringabell", length=4, population=16, generations=1).search(model, target, g, context())
    g = torch.Generator().manual_seed(0)
    best = attack.search(model, target, g, context())
    assert best[0] == tok.bos_token_id and (best[5:] == tok.eos_token_id).all()
    assert ((best[1:5] > 0) & (best[1:5] < tok.bos_token_id)).all()  # no special token in the prompt
    fit = RingABell.fitness(model, torch.stack([first, best]), target)
    assert fit[1] < fit[0]  # the same first generation, then 29 more: the fittest only gets fitter
