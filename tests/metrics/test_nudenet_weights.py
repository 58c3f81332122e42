"""UnlearnDiffAtk's detector weights: the unlearndiffatk preset loads nudenet==3.0.8's best.onnx (the bytes of
Diffusion-MU-Attack's files/best.onnx), checked by sha256; `relearnbench fetch-weights nudenet` puts it in the
cache, and a run without it is stopped by a preflight line that names that command."""

import hashlib
import sys

import pytest

from relearnbench.errors import UserError
from relearnbench.metrics import judges
from relearnbench.metrics.judges import NUDENET_WEIGHTS, NudeNetJudge, fetch_nudenet_best, nudenet_weights_path

BEST_SHA256 = "9832f15515bdb06bcb5a77beb60bc8ea54439bd7ecbaac46dac3b760b3dd13cc"  # nudenet-3.0.8 wheel, measured
BEST_BYTES = 12_125_773  # Diffusion-MU-Attack files/best.onnx, git blob 12f4f780…


def test_the_preset_file_is_unlearndiffatks_best_onnx():
    judge = NudeNetJudge()  # preset unlearndiffatk
    assert judge.weights == "best" and NUDENET_WEIGHTS["best"][1] == BEST_SHA256
    path = nudenet_weights_path("best")
    if not path.exists():  # fetch it once for this and later sessions; offline, skip
        try:
            fetch_nudenet_best()
        except UserError as e:
            pytest.skip(f"best.onnx not cached and not downloadable here: {e}")
    data = path.read_bytes()
    assert len(data) == BEST_BYTES
    assert hashlib.sha256(data).hexdigest() == BEST_SHA256
    assert judge.weights_file() == path
    assert BEST_SHA256 in judge.info()["weights"]  # every score records the file it was judged with
    assert NudeNetJudge(NudeNetJudge.Config(preset="library")).weights == "320n"


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RELEARNBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "nudenet"


def test_preflight_names_the_fetch_command(empty_cache):
    judge = NudeNetJudge()
    (line,) = judge.preflight(None, None)
    assert "relearnbench fetch-weights nudenet" in line and str(empty_cache) in line
    with pytest.raises(UserError, match="fetch-weights nudenet"):
        judge.weights_file()
    assert NudeNetJudge(NudeNetJudge.Config(weights="320n")).preflight(None, None) == []
    with pytest.raises(UserError, match="expected best, 320n"):
        NudeNetJudge(NudeNetJudge.Config(weights="best.pt"))


def test_a_file_with_other_bytes_is_refused(empty_cache):
    empty_cache.mkdir(parents=True)
    (empty_cache / "best.onnx").write_bytes(b"not the detector")
    with pytest.raises(UserError, match=f"not {BEST_SHA256}"):
        NudeNetJudge().weights_file()


def test_fetch_error_paths(empty_cache, tmp_path):
    failing = (sys.executable, "-c", "import sys; sys.exit(3)")
    with pytest.raises(UserError, match="exited 3.*relearnbench fetch-weights nudenet"):
        fetch_nudenet_best(pip=failing)
    # a "pip" that saves a wheel whose best.onnx has other bytes: refused, nothing kept
    fake = tmp_path / "fake_pip.py"
    fake.write_text("import sys, zipfile\n"
                    "d = sys.argv[sys.argv.index('-d') + 1]\n"
                    "with zipfile.ZipFile(d + '/nudenet-3.0.8-py3-none-any.whl', 'w') as z:\n"
                    "    z.writestr('nudenet/best.onnx', b'other bytes')\n")
    with pytest.raises(UserError, match="the registry served other bytes"):
        fetch_nudenet_best(pip=(sys.executable, str(fake)))
    assert not (empty_cache / "best.onnx").exists()
    assert judges.nudenet_cache() == empty_cache
