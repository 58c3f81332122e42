"""Launching a grid: the preflight, the run's one results store, the check that finished cells ran with this
command's settings, then the executor (``local`` or ``ray``) on the pending cells."""

from __future__ import annotations

import pathlib
import sys


def execute(spec, run_dir: pathlib.Path, retry_failed=False, quiet=False, keep_changed=False):
    """Run ``spec``'s pending cells into ``run_dir``; returns the executor's ``Outcome``."""
    from relearnbench.preflight import preflight
    from relearnbench.progress import Progress
    from relearnbench.runner import cached_plan, check_finished
    from relearnbench.spec import spec_dict
    from relearnbench.store import Store

    preflight(cached_plan(spec))  # validate everything before any work or any file
    store = Store(run_dir)  # the one connection to the results store: jobs get its artifacts folder only
    try:
        if not keep_changed:
            check_finished(spec, store)
        store.set_meta("spec", spec_dict(spec))
        store.set_meta("command", "relearnbench " + " ".join(sys.argv[1:]))  # for the report's provenance
        if spec.executor == "ray":
            from relearnbench.ray_executor import run_ray

            return run_ray(spec, store, retry_failed=retry_failed, quiet=quiet)
        from relearnbench.executors import run_local

        with Progress(enabled=not quiet) as progress:
            return run_local(spec, store, retry_failed=retry_failed, progress=progress)
    finally:
        store.close()
