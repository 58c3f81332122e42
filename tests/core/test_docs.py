"""Every `relearnbench ...` command in the README's and docs/'s code blocks still runs as written.

Each command is parsed by the CLI itself (click): its subcommand, every flag and every value's type must
exist. `ls` and `show` commands run; a `run` command whose files are all at hand runs with `--dry-run`; the
rest (real SD weights, a prompt CSV, a run directory: placeholders a reader fills in) are parsed only."""

import pathlib
import re
import shlex

import click
import pytest
from click.testing import CliRunner

from relearnbench.cli import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def commands(path: pathlib.Path) -> list[str]:
    """The `relearnbench` commands of ``path``: each line of its code blocks (continuations joined, comments
    dropped), then each inline code span of its prose."""
    text, out = path.read_text(), []
    for block in FENCE.findall(text):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("relearnbench "):
                out.append(re.split(r"\s+#\s", line)[0].strip())
    prose = FENCE.sub("", text)
    out += [" ".join(span.split()) for span in re.findall(r"`(relearnbench [^`]+)`", prose)]
    return list(dict.fromkeys(out))


ALL = [(path.relative_to(ROOT).as_posix(), c) for path in DOCS for c in commands(path)]


def argv(command: str) -> list[str]:
    """The arguments after `relearnbench`, with a synopsis's notation filled in: ``[X]`` is X, ``a|b`` is a,
    ``...`` is nothing."""
    out = []
    for token in shlex.split(command)[1:]:
        token = token.strip("[]")
        if token and token != "...":
            out.append(token.split("|")[0] if "|" in token and not token.startswith("-") else token)
    return out


def resolve(args: list[str]) -> tuple[click.Command, list[str], str]:
    """(the subcommand, its arguments, its name) for ``args``, through nested groups (`toy build`)."""
    command, name = cli, "relearnbench"
    while isinstance(command, click.Group):
        assert args, f"{name} needs a subcommand"
        sub = command.get_command(click.Context(command), args[0])
        assert sub is not None, f"{name} has no subcommand {args[0]!r}"
        command, name, args = sub, f"{name} {args[0]}", args[1:]
    return command, args, name


def at_hand(args: list[str]) -> bool:
    """True when every file or folder the command names exists here (a placeholder path does not)."""
    paths = [a.split("=", 1)[-1] for a in args if "/" in a or re.search(r"\.(csv|toml|py|safetensors|ckpt|pt|bin)$", a)]
    return all((ROOT / p).exists() for p in paths)


def test_the_docs_have_commands_in_every_topic():
    where = {path for path, _ in ALL}
    assert len(ALL) >= 15, ALL
    assert {"README.md", "docs/running.md", "docs/stable-diffusion.md", "docs/cluster.md", "docs/plugins.md"} <= where


@pytest.mark.parametrize("path,command", ALL, ids=[f"{p}:{c[13:60]}" for p, c in ALL])
def test_command_parses(path, command):
    """The subcommand and every flag exist, and every value has the type its option asks for."""
    sub, args, name = resolve(argv(command))
    try:
        sub.make_context(name, list(args))
    except click.ClickException as e:  # UsageError, BadParameter, NoSuchOption
        pytest.fail(f"{path}: `{command}` does not parse: {e.format_message()}")


RUNNABLE = [(p, c) for p, c in ALL if at_hand(argv(c)) and (argv(c)[0] in ("ls", "show")
                                                             or (argv(c)[0] == "run" and "--executor" not in c))]


@pytest.mark.parametrize("path,command", RUNNABLE, ids=[f"{p}:{c[13:60]}" for p, c in RUNNABLE])
def test_command_runs(path, command, tmp_path, monkeypatch):
    """`ls` and `show` as written; a `run` whose files are at hand as its `--dry-run` (its resolved recipe)."""
    monkeypatch.chdir(tmp_path)  # the dry run reads ./runs to say whether it would resume
    args = argv(command) + (["--dry-run"] if argv(command)[0] == "run" else [])
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, f"{path}: `{command}` exited {result.exit_code}:\n{result.output}"
    if args[0] == "run":
        assert "nothing was loaded or run (--dry-run)" in result.output


def test_a_wrong_flag_is_caught():
    """The checker itself: a flag that does not exist, a subcommand that does not exist, a bad choice."""
    for bad in ("relearnbench run --methodz esd", "relearnbench tabel", "relearnbench table --format pdf"):
        with pytest.raises((AssertionError, click.ClickException)):
            sub, args, name = resolve(argv(bad))
            sub.make_context(name, list(args))


def test_readme_fits_on_a_few_screens():
    """The README is the entry point; the rest lives in docs/, each topic linked from it."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 10_000
    for doc in (ROOT / "docs").glob("*.md"):
        assert f"docs/{doc.name}" in readme, f"README.md does not link docs/{doc.name}"
    assert "```\npython -m pytest -q\n```" in readme  # CI runs exactly this command (.ci/run)


def test_relative_links_resolve():
    """Every relative link and image in the README and docs/ points at a file that exists."""
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if not re.match(r"[a-z]+://", target):
                assert (path.parent / target).exists(), f"{path.relative_to(ROOT)}: broken link {target}"
