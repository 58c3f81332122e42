import pytest

from relearnbench.errors import UserError
from relearnbench.registry import ATTACKS, METHODS, METRICS, Registry

pytestmark = pytest.mark.usefixtures("fakes")  # the dummy method, attack and metric


def test_lazy_builtins_resolve_to_classes_with_configs():
    for reg in (METHODS, ATTACKS, METRICS):
        cls = reg.get("dummy")
        assert cls.Config is not None and cls.config_name


def test_duplicate_name_is_an_error():
    reg = Registry("things")
    reg.register("a", object)
    with pytest.raises(UserError, match="registered twice"):
        reg.register("a", dict)


def test_unknown_name_lists_near_misses():
    with pytest.raises(UserError) as e:
        METHODS.get("esdd")
    near = str(e.value).split("did you mean ")[1].rstrip("?").split(", ")
    assert "esd" in near and "salun" not in near and "salun" in str(e.value)  # every name known, the close ones offered


def test_fnmatch_listing_and_meta():
    assert METHODS.list("esd-u-*") == ["esd-u-1", "esd-u-3"]
    assert METHODS.meta("esd-x-3")["preset"] == {"train": "x", "eta": 3.0}
    assert METRICS.meta("asr")["higher_is_better"] is False
    assert METRICS.meta("clip")["higher_is_better"] is True


def test_unknown_wrapper_suffix():
    with pytest.raises(UserError, match=r"unknown wrapper '\+foo'"):
        METHODS.check("esd+foo")


def test_decorator_registration_takes_docstring():
    reg = Registry("things")

    @reg.register("x")
    class X:
        """first line
        more"""
    assert reg.get("x") is X and reg.description("x") == "first line"


def test_ls_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys; from relearnbench.cli import main\n"
            "try:\n main(['ls'])\nexcept SystemExit: pass\n"
            "assert 'torch' not in sys.modules, 'ls imported torch'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "esd-u-1" in proc.stdout and "quick" in proc.stdout
