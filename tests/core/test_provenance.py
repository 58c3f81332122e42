"""Every value of a Stable Diffusion preset says where it comes from: `# published: <repo> <path> <what it
says>` or `# ours: <why>`, on its own line or heading the block of keys it stands above (blank lines end a
block). A researcher runs these presets on a GPU trusting that they are the papers' settings."""

import pathlib

import pytest

from relearnbench.provenance import sources

ROOT = pathlib.Path(__file__).resolve().parents[2]
PRESETS = sorted(p for folder in ("methods", "attacks", "metrics", "relearnbench") for p in (ROOT / folder).glob("*.toml"))


def unsourced(text: str) -> list[str]:
    """``table.key`` of every key in a real model's table ([sd14...], [sd21...], [sdxl...]) with no provenance comment."""
    return [f"{t}.{k}" for (t, k), src in sources(text).items() if t.split(".")[0] in ("sd14", "sd21", "sdxl") and not src]


def test_the_rule_catches_an_unsourced_key():
    text = "[sd14]\n# published: a/b c.py says 1\nlr = 1\n\nsteps = 2\n# a comment\nbatch = 3  # ours: why\n[toy]\nx = 1\n"
    assert unsourced(text) == ["sd14.steps"]
    assert unsourced("[sd14.ft]\n# ours: cost\n# more\nlr = 1\nsteps = 3\n") == []
    assert sources("[sd14.ft]\n# ours: cost\n# of it\nlr = 1\n")[("sd14.ft", "lr")] == "ours: cost of it"


def test_presets_exist():
    assert any(p.name == "meta.toml" for p in PRESETS) and any(p.name == "evaluate.toml" for p in PRESETS)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_sd14_value_has_a_source(path):
    missing = unsourced(path.read_text())
    assert not missing, f"{path.relative_to(ROOT)}: no '# published: ...' or '# ours: ...' for {', '.join(missing)}"
