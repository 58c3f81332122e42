"""`--plugin FILE.py` through the CLI: the file's folder is importable (a plugin may be split over
modules), and a file that registers nothing is an error instead of a silent no-op."""


def test_a_plugin_file_imports_its_neighbour(tmp_path, run_cli):
    (tmp_path / "helpers_for_plug.py").write_text("VALUE = 0.5\n")
    plugin = tmp_path / "plug.py"
    plugin.write_text(
        "from helpers_for_plug import VALUE\n"
        "from relearnbench.api import Metric, Score\n"
        "from relearnbench.registry import METRICS\n"
        "@METRICS.register('half', higher_is_better=True)\n"
        "class Half(Metric):\n"
        "    '''a neighbour's constant'''\n"
        "    needs_model = False\n"
        "    def compute(self, ev):\n"
        "        return [Score('half', VALUE)]\n")
    listing = run_cli("ls", "metrics", "half", "--plugin", plugin, cwd=tmp_path.parent, check=True).stdout
    assert "half" in listing and "a neighbour's constant" in listing


def test_a_plugin_file_that_registers_nothing_is_an_error(tmp_path, run_cli):
    plugin = tmp_path / "empty.py"
    plugin.write_text("x = 1\n")
    proc = run_cli("ls", "methods", "--plugin", plugin)
    assert proc.returncode == 2 and f"--plugin {plugin} registered nothing" in proc.stderr


def test_set_lists_take_commas_and_single_values():
    from relearnbench.config import make_config, parse_sets
    from relearnbench.registry import ATTACKS, METRICS

    sets = parse_sets(["lora.curve=0,2", "gradients.timesteps=500"])
    assert make_config(ATTACKS.get("lora").Config, "lora", sets["lora"]).curve == (0, 2)
    assert make_config(METRICS.get("gradients").Config, "gradients", sets["gradients"]).timesteps == (500,)
