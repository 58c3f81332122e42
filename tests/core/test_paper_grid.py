"""The paper-sd14 grid is the meta-unlearning paper's table: its six methods plain and with meta, its attacks,
UnlearnDiffAtk on RECE and meta-RECE only (a grid's [only] table), FID on COCO captions; the dry run lists it."""

import pytest

from relearnbench.errors import UserError
from relearnbench.spec import build_spec, load_grid

PAPER_METHODS = ["esd-u-1", "esd-u-3", "esd-f-3", "sdd", "uce", "rece"]


def test_only_restricts_an_attack_to_some_methods():
    grid = {"methods": ["uce", "rece", "rece+meta"], "attacks": ["none", "unlearndiffatk"],
            "only": {"unlearndiffatk": ["rece", "rece+meta"]}}
    cells = {(m, a) for _, _, m, a, _ in build_spec(grid, {}, {}).cells()}
    assert cells == {("uce", "none"), ("rece", "none"), ("rece+meta", "none"),
                     ("rece", "unlearndiffatk"), ("rece+meta", "unlearndiffatk")}
    # flags that leave the attack or a method out keep the rest of the grid runnable
    narrowed = build_spec(grid, {"attacks": ["none"], "methods": ["rece"]}, {})
    assert narrowed.only == {} and {c[2:4] for c in narrowed.cells()} == {("rece", "none")}
    with pytest.raises(UserError, match="unlearndifatk"):
        build_spec({**grid, "only": {"unlearndifatk": ["rece"]}}, {}, {})
    with pytest.raises(UserError, match="must be a table"):
        build_spec({**grid, "only": ["rece"]}, {}, {})


def test_the_grid_holds_the_papers_table():
    grid = load_grid("paper-sd14")
    assert set(grid["methods"]) == {"none", *PAPER_METHODS, *(f"{m}+meta" for m in PAPER_METHODS)}
    assert {"none", "ft", "ft_one", "ft_clean", "unlearndiffatk"} == set(grid["attacks"])
    assert grid["only"] == {"unlearndiffatk": ["rece", "rece+meta"]}
    assert grid["dtype"] == "float32" and grid["set"]["fid"]["prompts"] == grid["set"]["clip"]["prompts"] == "coco_10k.csv"


def test_dry_run_lists_every_model_and_attack(run_cli, tmp_path):
    prompts = tmp_path / "nudity.csv"
    prompts.write_text("prompt,evaluation_seed,evaluation_guidance\na person,1,7.5\n")
    out = run_cli("run", "--grid", "paper-sd14", "--dry-run", "--set", f"concept.prompts={prompts}", check=True).stdout
    cells = [line.strip() for line in out.splitlines() if line.startswith("  sd14/nudity/") and ":" not in line]  # not the memory lines
    assert len(cells) == 13 * 4 + 2  # 12 unlearned models and the original x 4 attacks; unlearndiffatk on 2
    for m in PAPER_METHODS:
        for name in (m, f"{m}+meta"):
            assert f"  method {name} [sd14]" in out
            assert all(f"sd14/nudity/{name}/{a}/0" in cells for a in ("none", "ft", "ft_one", "ft_clean"))
    assert {c for c in cells if "/unlearndiffatk/" in c} == {"sd14/nudity/rece/unlearndiffatk/0",
                                                           "sd14/nudity/rece+meta/unlearndiffatk/0"}
    assert "prompts = 'coco_10k.csv'" in out


def test_fid_on_captions_names_both_flags(tmp_path):
    from relearnbench.concepts import load_concept
    from relearnbench.metrics.fid import FID

    prompts = tmp_path / "nudity.csv"
    prompts.write_text("prompt,evaluation_seed,evaluation_guidance\na person,1,7.5\n")
    concept = load_concept("nudity", {"prompts": str(prompts)})
    (line,) = FID(FID.Config(prompts="coco_10k.csv")).preflight(concept, None)
    assert "--set fid.prompts=coco_10k.csv" in line and "--set concept.fid_reference=DIR" in line


def test_clip_scores_a_caption_file(run_cli, tmp_path):
    """clip.prompts = a caption CSV (coco_10k.csv's columns): one image per caption at its seed, each scored
    against its caption; a missing file is named in the preflight."""
    import json
    import sqlite3

    captions = tmp_path / "captions.csv"
    captions.write_text("case_number,source,prompt,evaluation_seed\n0,coco,a red circle,11\n1,coco,a blue square,12\n"
                        "2,coco,a green triangle,13\n")
    out = tmp_path / "run"
    run_cli("run", "--concepts", "triangle", "--methods", "none", "--attacks", "none", "--metrics", "clip",
            "--set", f"clip.prompts={captions}", "--set", "sample.steps=2", "--set", "sample.images_per_prompt=1",
            "--out", out, "--quiet", check=True)
    with sqlite3.connect(out / "results.sqlite") as db:
        value, n, info = db.execute("SELECT value, n, info FROM records WHERE metric = 'clip' AND stage = 'pre'").fetchone()
    assert n == 3 and 0 <= value <= 100 and json.loads(info)["n_prompts"] == 3
    missing = run_cli("run", "--concepts", "triangle", "--methods", "none", "--attacks", "none", "--metrics", "clip",
                      "--set", f"clip.prompts={tmp_path / 'coco_10k.csv'}", "--out", tmp_path / "run2")
    assert missing.returncode == 2 and "--set clip.prompts=coco_10k.csv" in missing.stderr
