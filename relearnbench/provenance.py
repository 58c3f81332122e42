"""Where each preset value comes from: the ``# published: <repo> <path> <what it says>`` or ``# ours: <why>``
comment beside a key in a plugin's TOML presets, or heading the block of keys it stands above (a blank
line ends a block). ``relearnbench plan`` prints it beside every resolved setting; a test requires one
for every key of every ``[sd14...]`` table."""

from __future__ import annotations

import re

from relearnbench.config import preset_path

SOURCE = re.compile(r"#\s*((?:published|ours):\s*\S.*)$")
KEY = re.compile(r"^([A-Za-z0-9_\-]+)\s*=")


def sources(text: str) -> dict[tuple[str, str], str | None]:
    """``{(table, key): provenance comment or None}`` for every key of a TOML preset file's text."""
    out, table, block = {}, "", None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            table, block = stripped.strip("[]").strip(), None
        elif not stripped:
            block = None
        elif stripped.startswith("#"):
            match = SOURCE.match(stripped)
            if match:  # a provenance comment starts a block; further comment lines continue it
                block = match.group(1)
            elif block:
                block += " " + stripped.lstrip("# ")
        elif KEY.match(stripped):
            own = SOURCE.search(line)
            out[(table, KEY.match(stripped).group(1))] = own.group(1) if own else block
    return out


def source_of(plugin_cls, tables: list[str], key: str) -> tuple[str, str | None] | None:
    """(``file [table]``, its comment) of the last of ``tables`` that sets ``key`` in the plugin's presets."""
    path = preset_path(plugin_cls)
    if path is None:
        return None
    found = sources(path.read_text())
    for table in reversed(tables):
        if (table, key) in found:
            return f"{path.parent.name}/{path.name} [{table}]", found[(table, key)]
    return None
