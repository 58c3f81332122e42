"""The committed reference table of published SD-1.4 numbers reads as our leaderboard format."""

import pathlib
import re

import pytest

from relearnbench.registry import ATTACKS, METHODS
from relearnbench.table import direction

PAPER_TABLE = pathlib.Path(__file__).resolve().parents[2] / "leaderboards" / "paper-sd14-nudity.md"
ARROWS = {True: "↑", False: "↓"}
EXPECTED_COLUMNS = {
    "none": ["method", "asr↓ · pre", "clip↑ · pre", "fid↓ · pre", "source"],
    "ft": ["method", "asr↓ · pre", "asr↓ · post@50", "asr↓ · post@100", "asr↓ · post@200", "asr↓ · post@300",
           "source"],
    "ft_clean": ["method", "asr↓ · pre", "asr↓ · post@100", "source"],
    "adversarial prompts": ["method", "asr↓ · post", "source"],
    "unlearndiffatk": ["method", "asr↓ · pre", "asr↓ · post", "fid↓ · pre", "source"],
}


def tables(text: str) -> dict[str, list[list[str]]]:
    """{attack: rows of cells, header first} for every '**attack: NAME**' title and the table below it."""
    out, attack, rows = {}, None, None
    for line in text.splitlines() + [""]:
        title = re.match(r"\*\*attack: (.+?)\*\*", line)
        if title:
            attack = title.group(1)
        elif line.startswith("|"):
            rows = out.setdefault(attack, []) if rows is None else rows
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        else:
            rows = None
    return out


@pytest.fixture(scope="module")
def text():
    return PAPER_TABLE.read_text()


def test_paper_table_has_every_attack_with_its_columns(text):
    found = tables(text)
    assert {a: rows[0] for a, rows in found.items()} == EXPECTED_COLUMNS
    for attack, rows in found.items():
        assert set(rows[1]) == {"---"}, f"{attack}: the second line is not a markdown separator"
        assert len(rows) > 2, f"{attack}: no rows"
        assert all(len(r) == len(rows[0]) for r in rows), f"{attack}: a row has the wrong number of cells"
        assert attack in ATTACKS or attack == "adversarial prompts"  # the paper does not name that attack


def test_metric_columns_carry_the_registered_direction(text):
    for rows in tables(text).values():
        for column in rows[0][1:-1]:
            metric, arrow, stage = re.fullmatch(r"(\w+)([↑↓]) · (pre|post|post@\d+)", column).groups()
            assert ARROWS[direction(metric)] == arrow, column


def test_every_row_cites_a_source_defined_below(text):
    defined = set(re.findall(r"^\* \*\*(\[\w+\])\*\*", text, flags=re.M))
    assert defined == {"[G]", "[U]"}
    for attack, rows in tables(text).items():
        for row in rows[2:]:
            cited = re.findall(r"\[\w+\]", row[-1])
            assert cited and set(cited) <= defined, f"{attack} · {row[0]}: source {row[-1]!r}"


def test_values_are_published_percentages_or_say_not_published(text):
    for attack, rows in tables(text).items():
        for row in rows[2:]:
            method = re.sub(r" \(.*\)$", "", row[0])
            assert method in METHODS or "(" in row[0], f"{row[0]}: neither a method nor marked as not ours"
            for column, cell in zip(rows[0][1:-1], row[1:-1]):
                if cell == "not published":
                    continue
                assert re.fullmatch(r"\d+\.\d\d", cell), f"{attack} · {row[0]} · {column}: {cell!r}"
                if column.startswith("asr"):  # 142 prompts: k/142, to two decimals (rounded or cut)
                    assert abs(float(cell) - round(float(cell) * 1.42) / 1.42) <= 0.01, f"{row[0]}: {cell}"


TOY_CSV = PAPER_TABLE.parent / "toy.csv"


@pytest.mark.slow  # 65 s on 2 cores: a fresh base-model run of both toy concepts
def test_toy_table_regenerates(run_cli, tmp_path):
    """The base-model rows of the committed toy leaderboard come out of a fresh run on this machine: every
    asr / related value within one image (100/32 %, 100/64 %) or the record's own interval, whichever is wider
    (thread counts and CPUs may flip a borderline image). The fresh run's per-prompt rows (`table --prompts`)
    name every prompt of the concept and average to their record's value."""
    import io

    import pandas as pd

    committed = pd.read_csv(TOY_CSV)
    key = (committed.concept == "triangle") & (committed.method == "none") & (committed.attack == "none") & \
          (committed.seed == 0) & (committed.stage == "pre") & committed.metric.isin(["asr", "related.related",
                                                                                        "related.unrelated"])
    committed = committed[key].set_index("metric")
    assert len(committed) == 3
    out = tmp_path / "run"
    run_cli("run", "--methods", "none", "--attacks", "none", "--concepts", "triangle", "--metrics", "asr,related",
            "--out", out, "--quiet", check=True)
    fresh = pd.read_csv(io.StringIO(run_cli("table", out, "--long", "--format", "csv", check=True).stdout))
    fresh = fresh[fresh.stage == "pre"].set_index("metric")
    for metric, row in committed.iterrows():
        one_image = 100 / row["n"]
        tolerance = max(one_image, (row["hi"] - row["lo"]) / 2)
        assert abs(fresh.loc[metric, "value"] - row["value"]) <= tolerance, metric

    from relearnbench.concepts import load_concept

    concept = load_concept("triangle")
    prompts = pd.read_csv(io.StringIO(run_cli("table", out, "--prompts", "--stages", "pre", "--format", "csv",
                                              check=True).stdout))
    for metric, texts in {"asr": concept.forget_texts, "related.related": concept.related,
                          "related.unrelated": concept.unrelated}.items():
        rows = prompts[prompts.metric == metric]
        assert list(rows.prompt) == list(texts), metric
        assert rows.value.between(0, 100).all()
        assert rows.value.mean() == pytest.approx(fresh.loc[metric, "value"]), metric  # equal images per prompt
    both = run_cli("table", out, "--prompts", "--long")
    assert both.returncode != 0 and "--long and --prompts" in both.stderr


def test_paired_differences_are_per_seed_with_a_t_interval():
    import importlib.util

    import pandas as pd

    spec = importlib.util.spec_from_file_location("paired", PAPER_TABLE.parent / "paired.py")
    paired = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paired)
    rows = [dict(concept="c", method=m, attack="ft", metric="asr", stage=s, seed=seed, value=v)
            for m, vals in (("esd", (10, 20, 30)), ("esd+meta", (13, 20, 33)))
            for seed, v0 in enumerate(vals) for s, v in (("pre", v0), ("post@0", v0), ("post@5", v0 + 50),
                                                          ("post", v0 + 50))]
    rows.append(dict(concept="c", method="esd+meta", attack="none", metric="asr", stage="pre", seed=0, value=99))
    out = paired.paired(pd.DataFrame(rows), "esd", ["esd+meta"], "ft")
    assert [r[1] for r in out] == ["pre", "post@5"]  # post@0 and post repeat pre and the last point
    concept, stage, method, base, diff, per_seed, n = out[0]
    assert (base, per_seed, n) == ("20.0", "+3.0, +0.0, +3.0", 3)
    half = 4.302653  # t(0.975, 2) * sd / sqrt(3), and the differences (3, 0, 3) have sd sqrt(3)
    assert diff == f"+2.0 ± {half:.1f}"


def test_leaderboard_puts_the_base_model_first_and_counts_seeds():
    import pandas as pd

    from relearnbench.table import leaderboard

    rows = [dict(model="toy", concept="c", method=m, attack="ft", seed=seed, stage=stage, metric="asr", value=v,
                 lo=v - 1, hi=v + 1, n=32)
            for m, seeds in (("esd", (0, 1, 2)), ("esd+meta", (0, 1, 2)), ("none", (0,)))
            for seed in seeds for stage, v in (("pre", 10.0 + seed), ("post", 90.0 + seed))]
    wide = leaderboard(pd.DataFrame(rows), attack="ft")
    assert list(wide["method"]) == ["none", "esd", "esd+meta"]
    assert list(wide["seeds"]) == [1, 3, 3]
    assert list(wide.columns) == ["method", "seeds", "asr↓ · pre", "asr↓ · post"]
    assert wide.loc[1, "asr↓ · pre"] == "11.0 ± 2.48"  # mean of 10, 11, 12 ± t(0.975, 2) · 1 / √3


def test_protocol_comparison_pairs_meta_by_seed_and_combines_the_intervals():
    import importlib.util

    import pandas as pd

    spec = importlib.util.spec_from_file_location("protocols", PAPER_TABLE.parent / "protocols.py")
    protocols = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(protocols)
    rows = [dict(concept="c", method=m, attack="ft", metric="asr", stage="pre", seed=s, value=v, lo=v - 3, hi=v + 3)
            for m, vals in (("esd", (10, 20, 30)), ("esd+meta", (4, 16, 26))) for s, v in enumerate(vals)]
    mean, half, n = protocols.advantage(pd.DataFrame(rows), "c", "pre")
    assert mean == pytest.approx(-14 / 3) and n == 3 and half == pytest.approx(4.303 * (2 / 3 ** 0.5) / 3 ** 0.5, rel=1e-3)
    one = protocols.summary(pd.DataFrame(rows[:1]))
    assert one == (10.0, 3.0, 1)  # one seed: its own bootstrap half-width
    assert protocols.diff((20.0, 4.0, 1), (10.0, 3.0, 1)) == "+10.0 ± 5.0"
