"""The held-out protocol at load time: every shipped concept's three roles share no prompt, a concept
whose roles overlap fails with one line naming the prompt and both roles, and ``allow_overlap`` loads
it and marks its cells in the table."""

import pathlib

import pytest

from relearnbench.concepts import CONCEPT_DIR, load_concept, normalise
from relearnbench.config import catalogue
from relearnbench.errors import UserError

pytestmark = pytest.mark.usefixtures("fakes")  # the dummy method, attack and metric

CSV = "prompt,evaluation_seed,evaluation_guidance\na nude person on a beach,1,7.5\nnudity art,2,7.5\n"


def _load(name, tmp_path):
    if name != "nudity":
        return load_concept(name)
    csv = tmp_path / "i2p.csv"  # nudity's eval prompts are the user's CSV
    csv.write_text(CSV)
    return load_concept(name, {"prompts": str(csv)})


@pytest.mark.parametrize("name", sorted(catalogue(CONCEPT_DIR)))
def test_every_shipped_concept_has_three_disjoint_roles(name, tmp_path):
    concept = _load(name, tmp_path)
    roles = {role: {normalise(t) for t in texts} for role, texts in concept.roles().items()}
    assert roles["train"] and roles["eval"] and (roles["attack"] or concept.attack_data not in ("world", "generate"))
    assert not roles["train"] & roles["attack"]
    assert not roles["train"] & roles["eval"]
    assert not roles["attack"] & roles["eval"]
    assert concept.train and concept.train_related and concept.train_unrelated
    assert not concept.allow_overlap


@pytest.mark.parametrize("name", ["triangle", "striped"])
def test_toy_eval_prompts_are_held_out(name):
    """At least 8 eval forget prompts, none naming an attribute combination (colour, pattern, shape
    besides the concept's own, and the phrasing) that a train or attack prompt names."""
    from relearnbench.toy.world import parse_prompt

    concept = load_concept(name)
    assert len(concept.forget) >= 8
    attr = concept.target["attribute"]

    def combo(text):
        named = parse_prompt(text)
        named.pop(attr)
        return tuple(sorted(named.items())), text.split(" a ")[0] if " of a " in text else ""

    seen = {combo(t) for t in concept.train + concept.attack}
    assert not [t for t in concept.forget_texts if combo(t) in seen]


def _concept_file(tmp_path, **keys) -> pathlib.Path:
    """A toy concept file with disjoint roles; ``keys`` (TOML values) replace or add keys."""
    data = dict(name='"tri"', judge='"toy"', attack_data='"world"', train_prompts='["a triangle"]',
                train_related='["a diamond"]', train_unrelated='["a circle"]', attack_prompts='["a red triangle"]',
                forget_prompts='["a photo of a triangle", "a blue triangle"]', related_prompts='["a red diamond"]',
                unrelated_prompts='["a square"]')
    data.update(keys)
    path = tmp_path / "tri.toml"
    path.write_text("\n".join(f"{k} = {v}" for k, v in data.items() if v is not None))
    return path


def test_a_prompt_in_two_roles_fails_with_one_line_naming_it_and_both_roles(tmp_path):
    path = _concept_file(tmp_path, attack_prompts='["A  Blue Triangle"]')  # case and spacing normalised
    with pytest.raises(UserError) as e:
        load_concept(str(path))
    msg = str(e.value)
    assert "\n" not in msg
    assert "'a blue triangle'" in msg and "attack (attack_prompts)" in msg and "eval (forget_prompts)" in msg


def test_train_retain_and_eval_benign_prompts_are_checked_too(tmp_path):
    with pytest.raises(UserError, match=r"'a square' is in two roles, train \(train_unrelated\) and eval "
                                        r"\(unrelated_prompts\)"):
        load_concept(str(_concept_file(tmp_path, train_unrelated='["a square"]')))


def test_a_concept_without_train_prompts_is_refused(tmp_path):
    path = _concept_file(tmp_path, train_prompts=None)
    with pytest.raises(UserError, match="missing key 'train_prompts'"):
        load_concept(str(path))


def test_allow_overlap_loads_and_marks_the_cells(tmp_path, run_cli):
    path = _concept_file(tmp_path, train_prompts='["a blue triangle"]', allow_overlap="true")
    concept = load_concept(str(path))
    assert concept.allow_overlap and concept.role_hashes()["allow_overlap"] is True
    run = tmp_path / "run"
    run_cli("run", "--methods", "dummy", "--attacks", "dummy", "--metrics", "dummy", "--concepts", str(path),
            "--out", run, check=True)
    table = run_cli("table", run, "--format", "csv", check=True).stdout
    assert "overlap" in table.splitlines()[0] and "yes" in table.splitlines()[1]  # a column; the method keeps its name


def test_every_cell_stores_a_hash_of_each_roles_prompts(tmp_path, run_cli):
    import json
    import sqlite3

    run = tmp_path / "run"
    run_cli("run", "--methods", "dummy", "--attacks", "dummy", "--metrics", "dummy", "--concepts", "triangle",
            "--out", run, check=True)
    (config,), = sqlite3.connect(run / "results.sqlite").execute("SELECT config FROM cells").fetchall()
    roles = json.loads(config)["roles"]
    assert roles == load_concept("triangle").role_hashes() and set(roles) == {"train", "attack", "eval", "allow_overlap"}
