"""Why UCE's benign prompts collapse on the toy, and UCE's [toy] calibration (methods/uce.toml), on the train role
only. Nothing here sees an evaluation prompt.

Two measurements per concept (triangle, striped):

* ``tokens``: how alike the edited tokens are. For each train prompt, the cosine between its tail tokens (its last
  word, the end-of-text and the padding: what ``tokens = "tail"`` edits) and the tokens at the same positions of each
  train benign prompt, against the same for its last word's token alone (``tokens = "last"``).
* ``settings``: after UCE at each setting, the share of images of the train prompts the toy judge flags (ASR), the
  share of train_related / train_unrelated images rendered as asked, and FID of the train benign images against world
  renders of the same prompts (toy-judge features, as ``metrics/fid.py``). The benign prompts a setting preserves (or
  guides to) are marked ``*``: only the unmarked ones are held out from the edit, as the eval prompts are.

    nice -n 10 python benchmarks/calibrate_uce.py tokens
    nice -n 10 python benchmarks/calibrate_uce.py drift
    nice -n 10 python benchmarks/calibrate_uce.py settings [CONCEPT[:I,J] ...]   # 2-3 minutes a setting, busy cores
    N_FORGET=16 nice -n 10 python benchmarks/calibrate_uce.py settings striped:0,24,25,26
"""

import os
import sys

import numpy as np
import torch

from relearnbench.api import Prompt
from relearnbench.concepts import load_concept
from relearnbench.config import build
from relearnbench.data import images_for
from relearnbench.diffusion import encode_text_frozen, sample
from relearnbench.metrics.fid import ToyFeatures, frechet, statistics
from relearnbench.models import ModelConfig, load_model
from relearnbench.registry import JUDGES, METHODS
from relearnbench.testing import context

TOY = dict(erase_scale=1.0, preserve_scale=1.0, preserve_uncond=True, lamb=0.1, edit_keys=True)  # the old [toy]
SETTINGS = [  # (label, uce.* over TOY)
    ("tail, unrelated guide, preserve benign (the old preset)",
     dict(tokens="tail", guide="unrelated", preserve="benign")),
    ("tail, anchor guide, preserve benign", dict(tokens="tail", guide="anchor", preserve="benign")),
    ("tail, anchor guide, preserve related", dict(tokens="tail", guide="anchor", preserve="related")),
    ("tail, anchor guide, preserve none", dict(tokens="tail", guide="anchor", preserve="none")),
    ("last, anchor guide, preserve related", dict(tokens="last", guide="anchor", preserve="related")),
    ("last, anchor guide, preserve none", dict(tokens="last", guide="anchor", preserve="none")),
    ("last, anchor guide, preserve benign", dict(tokens="last", guide="anchor", preserve="benign")),
    ("last, unrelated guide, preserve benign", dict(tokens="last", guide="unrelated", preserve="benign")),
    ("last, unrelated guide, preserve related", dict(tokens="last", guide="unrelated", preserve="related")),
    ("tail, unrelated guide, preserve none", dict(tokens="tail", guide="unrelated", preserve="none")),
    ("last, unrelated guide, preserve none", dict(tokens="last", guide="unrelated", preserve="none")),
    ("tail, anchor guide, preserve related, lamb 10", dict(tokens="tail", guide="anchor", preserve="related", lamb=10)),
    ("tail, anchor guide, preserve related, lamb 100",
     dict(tokens="tail", guide="anchor", preserve="related", lamb=100)),
    ("tail, unrelated guide, preserve unrelated", dict(tokens="tail", guide="unrelated", preserve="unrelated")),
    ("last, unrelated guide, preserve unrelated", dict(tokens="last", guide="unrelated", preserve="unrelated")),
    ("tail, unrelated guide, preserve unrelated, lamb 100",
     dict(tokens="tail", guide="unrelated", preserve="unrelated", lamb=100)),
    *((f"tail, unrelated guide, preserve unrelated, lamb {lamb:g}",
       dict(tokens="tail", guide="unrelated", preserve="unrelated", lamb=lamb)) for lamb in (3, 10, 30)),
    ("tail, unrelated guide, preserve unrelated, lamb 100, erase_scale 3",
     dict(tokens="tail", guide="unrelated", preserve="unrelated", lamb=100, erase_scale=3.0)),
    # RECE (methods/rece.toml [toy]) around UCE at lamb 30: its rounds at their published round_lamb 0.1, and at 30
    ("rece, tail, unrelated guide, preserve unrelated, lamb 30",
     dict(method="rece", tokens="tail", guide="unrelated", preserve="unrelated", lamb=30)),
    ("rece, tail, unrelated guide, preserve unrelated, lamb 30, round_lamb 30",
     dict(method="rece", tokens="tail", guide="unrelated", preserve="unrelated", lamb=30, round_lamb=30)),
    ("rece, tail, unrelated guide, preserve unrelated, lamb 30, round_lamb 1000",
     dict(method="rece", tokens="tail", guide="unrelated", preserve="unrelated", lamb=30, round_lamb=1000)),
    ("rece, tail, unrelated guide, preserve unrelated, lamb 30, round_lamb 30, round_preserve_scale 1",
     dict(method="rece", tokens="tail", guide="unrelated", preserve="unrelated", lamb=30, round_lamb=30,
          round_preserve_scale=1.0)),
    *((f"tail, unrelated guide, preserve benign, lamb {lamb:g}", dict(tokens="tail", guide="unrelated",
                                                                      preserve="benign", lamb=lamb))
      for lamb in (30, 10, 3)),
]
LAMBS = [(f"{tok}, anchor guide, preserve related, lamb {lamb:g}",
          dict(tokens=tok, guide="anchor", preserve="related", lamb=lamb))
         for tok in ("tail", "last") for lamb in (1, 10, 100, 1000)]
N = 16  # images a benign prompt (as the toy evaluation's)
N_FORGET = int(os.environ.get("N_FORGET", 4))  # images a train prompt (as the toy evaluation's forget prompts)


def tokens(concept_name: str) -> None:
    concept, model = load_concept(concept_name), load_model("toy", ModelConfig())
    uce = build(METHODS, "uce", "toy", {})
    for name, benign in (("related", concept.train_related), ("unrelated", concept.train_unrelated)):
        tail, last, pad = [], [], []
        for f in concept.train:
            a = uce._tail_start(model, f)
            ef = encode_text_frozen(model, [f]).hidden[0]
            for b in benign:
                eb = encode_text_frozen(model, [b]).hidden[0]
                cos = torch.nn.functional.cosine_similarity(ef[a:], eb[a:], dim=-1)
                tail.append(cos.mean().item())
                pad.append(torch.nn.functional.cosine_similarity(ef[8:], eb[8:], dim=-1).mean().item())  # padding only
                j = uce._tail_start(model, b)
                last.append(torch.nn.functional.cosine_similarity(ef[a], eb[j], dim=0).item())
        print(f"{concept_name} train prompts vs train_{name}: tail tokens cos {np.mean(tail):.3f}, "
              f"padding alone {np.mean(pad):.3f}, last word token {np.mean(last):.3f}", flush=True)


def drift(concept_name: str) -> None:
    """How far each setting moves the keys and values of every token of each train benign prompt: mean over the
    edited projections and the prompt's 77 tokens of ‖(W − W_old) c‖ / ‖W_old c‖ (no sampling)."""
    concept, original = load_concept(concept_name), load_model("toy", ModelConfig())
    emb = encode_text_frozen(original, list(concept.train_benign)).hidden.double()
    svals = torch.linalg.svdvals(emb.reshape(-1, emb.shape[-1])) ** 2
    print(f"{concept_name}: the train benign prompts' tokens hold {svals[0] / svals.sum():.0%} of their energy in one "
          "direction", flush=True)
    for label, sets in SETTINGS + LAMBS:
        model = load_model("toy", ModelConfig())
        uce = build(METHODS, "uce", "toy", {"uce": {**TOY, **sets}})
        old = [p.weight.detach().double().clone() for p in uce.projections(model.unet)]
        uce.unlearn(model, concept, context(seed=0))
        moved = torch.stack([((p.weight.double() - w) @ emb.transpose(1, 2)).norm(dim=1)
                             / (w @ emb.transpose(1, 2)).norm(dim=1)
                             for p, w in zip(uce.projections(model.unet), old)]).mean(dim=(0, 2))
        print(f"  {label:58s} " + " ".join(f"{v:.2f}" for v in moved.tolist()), flush=True)


def score(model, concept, judge, reference) -> str:
    forget = [Prompt(p, seed=100 + i) for i, p in enumerate(concept.train)]
    benign = [Prompt(p, seed=200 + i) for i, p in enumerate(concept.train_benign)]
    f = sample(model, forget, N_FORGET, steps=10, guidance=5.0, seed=0)
    b = sample(model, benign, N, steps=10, guidance=5.0, seed=0)
    ok = judge.correct(b, [p.text for p in benign for _ in range(N)]).float().view(len(benign), N).mean(1) * 100
    asr = judge.flags(f, concept).float().mean().item() * 100
    fid = frechet(ToyFeatures(judge)(b), *reference)
    per = " ".join(f"{v:.0f}" for v in ok.tolist())
    return f"ASR {asr:5.1f}  benign {per}  FID {fid:6.1f}"


def settings(concept_name: str) -> None:
    """``CONCEPT`` runs every setting, ``CONCEPT:I,J`` settings I and J (0-based) of SETTINGS."""
    concept_name, _, only = concept_name.partition(":")
    chosen = [SETTINGS[int(i)] for i in only.split(",")] if only else SETTINGS
    torch.set_num_threads(1)
    concept = load_concept(concept_name)
    judge = JUDGES.get("toy")(JUDGES.get("toy").Config())
    model = load_model("toy", ModelConfig())
    real, _ = images_for(concept.train_benign, 250, concept, model, context(), source="world", seed=31337)
    reference = statistics(ToyFeatures(judge)(real))
    print(f"{concept_name}: benign = {list(concept.train_benign)}", flush=True)
    if not only:
        print(f"  original{'':58s} {score(model, concept, judge, reference)}", flush=True)
    for label, sets in chosen:
        model = load_model("toy", ModelConfig())
        sets = dict(sets)
        name = sets.pop("method", "uce")
        build(METHODS, name, "toy", {name: {**TOY, **sets}}).unlearn(model, concept, context(seed=0))
        kept = {"benign": concept.train_benign, "related": concept.train_related, "unrelated": concept.train_unrelated,
                "none": ()}[sets["preserve"]]
        kept = set(kept) | (set(concept.train_unrelated) if sets["guide"] == "unrelated" else set())
        marks = "".join("*" if p in kept else "." for p in concept.train_benign)
        print(f"  {label:58s} {marks:6s}  {score(model, concept, judge, reference)}", flush=True)


if __name__ == "__main__":
    what, names = sys.argv[1], sys.argv[2:] or ["triangle", "striped"]
    for n in names:
        {"tokens": tokens, "drift": drift, "settings": settings}[what](n)
