"""The shipped Stable Diffusion concepts' train and attack prompts share nothing with UnlearnDiffAtk's published
prompt files for the same concept (issue 31), so ``--set concept.prompts=FILE.csv`` with the published file
keeps the roles disjoint. The files' prompts are not shipped: ``data/unlearndiffatk_prompts.json`` holds the
sha256 of each normalised prompt, with the repository, commit and path they come from."""

import csv
import hashlib
import json
import pathlib
import tomllib

import pytest

from relearnbench.concepts import CONCEPT_DIR, ROLE_KEYS, load_concept, normalise

PUBLISHED = json.loads((pathlib.Path(__file__).parent / "data" / "unlearndiffatk_prompts.json").read_text())


def sha(text: str) -> str:
    return hashlib.sha256(normalise(text).encode()).hexdigest()


def test_the_hashes_name_their_source():
    assert PUBLISHED["repo"] == "OPTML-Group/Diffusion-MU-Attack" and len(PUBLISHED["commit"]) == 40
    assert set(PUBLISHED["concepts"]) == {"nudity", "van_gogh", "church", "garbage_truck", "parachute", "tench"}
    for entry in PUBLISHED["concepts"].values():
        assert entry["path"].startswith("prompts/") and "prompt" in entry["columns"]
        assert len(entry["sha256"]) >= 50 and all(len(h) == 64 for h in entry["sha256"])


@pytest.mark.parametrize("concept", sorted(PUBLISHED["concepts"]))
def test_train_and_attack_prompts_are_not_published_eval_prompts(concept):
    data = tomllib.loads((CONCEPT_DIR / f"{concept}.toml").read_text())
    published = set(PUBLISHED["concepts"][concept]["sha256"])
    ours = {role: [t for k in ROLE_KEYS[role] for t in data.get(k, [])] for role in ("train", "attack")}
    assert ours["train"] and ours["attack"]
    shared = [(role, t) for role, texts in ours.items() for t in texts if sha(t) in published]
    assert shared == [], f"{concept}: {shared} also in {PUBLISHED['concepts'][concept]['path']}"


def test_van_gogh_takes_a_published_prompt_file(tmp_path):
    """A CSV in the published file's layout with one of its prompts (the one the old attack prompt 'irises by
    Vincent van Gogh' duplicated) builds the concept: no prompt is in two roles."""
    prompt = "Irises by Vincent van Gogh"
    assert sha(prompt) in PUBLISHED["concepts"]["van_gogh"]["sha256"]  # it is one of the published prompts
    path = tmp_path / "vangogh.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=PUBLISHED["concepts"]["van_gogh"]["columns"])
        w.writeheader()
        w.writerow({k: "" for k in w.fieldnames} | {"prompt": prompt, "evaluation_seed": "2219",
                                                    "evaluation_guidance": "7.5"})
    c = load_concept("van_gogh", {"prompts": str(path)})
    assert [(p.text, p.seed, p.guidance) for p in c.forget] == [(prompt, 2219, 7.5)]
