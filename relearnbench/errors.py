"""The one exception type that reaches the user as a single readable line."""

import difflib


class UserError(Exception):
    """Bad input: the message names the problem and the fix. The CLI prints it without a traceback."""


def near_misses(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"known: {', '.join(sorted(known)) or '(none)'}{hint}"
