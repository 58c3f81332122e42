"""Rich progress bars: one for the grid, one transient bar per long stage (unlearning, attack, sampling)."""

from __future__ import annotations

import contextlib

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn


class Progress:
    def __init__(self, console: Console | None = None, enabled: bool = True):
        self.console = console or Console(stderr=True)
        self._bars = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=self.console, disable=not enabled)

    def __enter__(self):
        self._bars.__enter__()
        return self

    def __exit__(self, *exc):
        return self._bars.__exit__(*exc)

    def add(self, description: str, total: int):
        return self._bars.add_task(description, total=total)

    def advance(self, task, description: str | None = None):
        self._bars.update(task, advance=1, **({"description": description} if description else {}))

    def describe(self, task, description: str):
        """Say what a bar is on now, without advancing it."""
        self._bars.update(task, description=description)

    def log(self, message: str):
        self._bars.console.print(message)

    def track(self, iterable, description: str, total: int | None = None):
        if total is None:
            try:
                total = len(iterable)
            except TypeError:
                total = None
        task = self._bars.add_task(f"  {description}", total=total)
        try:
            for item in iterable:
                yield item
                self._bars.update(task, advance=1)
        finally:
            self._bars.remove_task(task)


@contextlib.contextmanager
def no_transformers_bars():
    """Silence transformers' own progress bars ("Loading weights", "Writing model shards"), which would
    interleave with ours on every load and save."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()
