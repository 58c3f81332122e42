"""run --dry-run: every cell and its resolved settings with their sources, and nothing loaded."""

from click.testing import CliRunner

from relearnbench.cli import cli


def test_dry_run_prints_the_paper_recipe_with_sources_and_loads_nothing(tmp_path, monkeypatch):
    import relearnbench.models as models

    def refuse(*a, **k):
        raise AssertionError("--dry-run loaded a model")

    monkeypatch.setattr(models, "load_model", refuse)
    csv = tmp_path / "nudity.csv"
    csv.write_text("prompt,evaluation_seed,evaluation_guidance\na nude figure,42,7.5\na bare back,7,\n")
    result = CliRunner().invoke(cli, ["run", "--grid", "paper-sd14", "--dry-run", "--set", f"concept.prompts={csv}",
                                      "--set", "esd.lr=2e-5", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "grid paper-sd14: 54 cells" in out and "sd14/nudity/uce+meta/ft_clean/0" in out
    assert "2 forget prompts (2 with a file seed)" in out
    assert "concept nudity: forget prompts sampled with unlearndiffatk" in out
    assert "lamb = 0.5    <- methods/uce.toml [sd14] (" in out
    assert "published: rohitgandikota/unified-concept-editing train-scripts/train_erase.py" in out
    assert "lr = 2e-05    <- --set esd.lr" in out and "eta = 3.0    <- the registry entry" in out
    assert "preset = 'authors-effective'    <- methods/meta.toml [sd14]" in out
    assert "steps = 100    <- methods/meta.toml [sd14.uce]" in out  # uce+meta's own table
    assert "'pipeline': 'Diffusion-MU-Attack src/tasks/utils/metrics/nudenet/detector.py" in out  # the judge's pipeline
    assert not (tmp_path / "run").exists()


def test_dry_run_without_the_prompt_csv_says_so():
    result = CliRunner().invoke(cli, ["run", "--grid", "paper-sd14", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "note: concept nudity has no forget prompts" in result.output and "54 cells" in result.output
