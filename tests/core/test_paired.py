"""leaderboards/paired.py's verdicts: does each +meta beat its +retain control after N attack steps, paired by seed."""

import importlib.util
import pathlib
import sys

import pytest

PAIRED = pathlib.Path(__file__).resolve().parents[2] / "leaderboards" / "paired.py"


def paired(args: list[str], monkeypatch, capsys) -> str:
    """Run paired.py's command line in-process; its standard output."""
    spec = importlib.util.spec_from_file_location("paired", PAIRED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [str(PAIRED), *args])
    module.main()
    return capsys.readouterr().out


def long_csv(path: pathlib.Path) -> pathlib.Path:
    """A long table as ``relearnbench table --long --format csv`` writes it: ASR at post@100 of ft per seed."""
    asr = {  # (concept, method) -> ASR % per seed 0, 1, 2
        ("a", "esd+meta"): (10, 20, 30), ("a", "esd+retain"): (21, 32, 41),    # meta − retain: -11, -12, -11
        ("b", "esd+meta"): (10, 30, 20), ("b", "esd+retain"): (20, 24, 22),    # -10, +6, -2: mean < 0, interval holds 0
        ("a", "uce+meta"): (50, 60, 70), ("a", "uce+retain"): (40, 50, 60),    # +10 each seed: +meta loses
        ("a", "sdd+meta"): (0,), ("a", "sdd+retain"): (5,),                    # one seed: no interval
        ("a", "rece+meta"): (0, 0, 0),                                         # no control run
    }
    lines = ["model,concept,method,attack,seed,stage,metric,value,lo,hi,n"]
    for (concept, method), values in asr.items():
        for seed, v in enumerate(values):
            lines += [f"toy,{concept},{method},ft,{seed},post@100,asr,{v},0,100,32",
                      f"toy,{concept},{method},ft,{seed},post@10,asr,{100 - v},0,100,32",  # another step: unread
                      f"toy,{concept},{method},lora,{seed},post@100,asr,{100 - v},0,100,32"]  # another attack
    path.write_text("\n".join(lines) + "\n")
    return path


def test_verdicts_say_beats_only_when_the_paired_interval_excludes_zero(tmp_path, monkeypatch, capsys):
    csv = long_csv(tmp_path / "toy.csv")
    out = paired([str(csv), "--verdicts", "100", "--bases", "esd,uce,sdd,rece,ca"], monkeypatch, capsys).splitlines()
    esd, uce, sdd, rece, ca = out
    # differences -11, -12, -11: mean -11.33, sd 0.577, t(0.975, 2) = 4.302653 -> half-width 1.43
    assert esd.startswith("- **esd+meta** against esd+retain, asr after 100 ft steps (beats on 1 of 2 concepts")
    assert "a: beats, -11.3 ± 1.4 over 3 seeds" in esd
    # -10, +6, -2: mean -2 (lower, but) sd 8, half-width 4.302653 * 8 / sqrt(3) = 19.9
    assert "b: does not beat (the interval holds 0), -2.0 ± 19.9 over 3 seeds" in esd
    assert "a: loses to, +10.0 ± 0.0 over 3 seeds" in uce and "(beats on 0 of 1 concepts" in uce
    assert "a: 1 seed, no interval" in sdd
    assert "a: not run" in rece and "b: not run" in rece
    assert "a: not run" in ca


def test_verdicts_read_the_attack_and_step_asked_for(tmp_path, monkeypatch, capsys):
    run = [str(long_csv(tmp_path / "toy.csv")), "--bases", "esd"]
    lora = paired(run + ["--verdicts", "100", "--attack", "lora"], monkeypatch, capsys)
    assert "asr after 100 lora steps" in lora and "a: loses to, +11.3 ± 1.4" in lora  # 100 − ASR: the sign turns
    step10 = paired(run + ["--verdicts", "10"], monkeypatch, capsys)
    assert "a: loses to, +11.3 ± 1.4" in step10
    missing = paired(run + ["--verdicts", "50"], monkeypatch, capsys)
    assert missing.strip() == "- **esd+meta** against esd+retain, asr after 50 ft steps: no records"


def test_verdicts_refuse_two_records_of_one_seed(tmp_path, monkeypatch, capsys):
    """Two cells of one seed (settings that differ) are named, never averaged into one difference."""
    csv = long_csv(tmp_path / "toy.csv")
    csv.write_text(csv.read_text() + "toy,a,esd+meta,ft,0,post@100,asr,90,0,100,32\n")
    with pytest.raises(SystemExit, match="a holds several post@100 records of one seed for esd[+]meta"):
        paired([str(csv), "--verdicts", "100", "--bases", "esd"], monkeypatch, capsys)
