"""Executors run a grid's pending cells: ``local`` (this process) and ``ray`` (relearnbench.ray_executor)."""

from __future__ import annotations

import itertools

from relearnbench.runner import Outcome, attack_job, cached_plan, pending, unlearn_job, write_result
from relearnbench.spec import Spec
from relearnbench.store import Store


def run_local(spec: Spec, store: Store, retry_failed: bool = False, progress=None) -> Outcome:
    p = cached_plan(spec)
    todo = pending(spec, store, retry_failed)
    outcome = Outcome(skipped=sum(1 for _ in spec.cells()) - len(todo))
    grid = progress.add("grid", total=len(todo)) if progress else None
    # cells arrive grouped by (model, concept, method, seed): unlearning runs once per group
    for group, cells in itertools.groupby(todo, key=lambda c: (c[0], c[1], c[2], c[4])):
        cells = list(cells)
        model, concept, method, seed = group
        try:
            if progress:
                progress.advance(grid, f"grid: unlearn {method} · {concept} · seed {seed}")
                progress._bars.update(grid, advance=-1)
            ukey, pre, used = unlearn_job(spec, str(store.dir), model, concept, method, seed, progress)
        except Exception as exc:  # a plugin that raises loses its cells only; the grid goes on
            for cell in cells:
                write_result(store, p, cell, [], exc, outcome)
                if progress:
                    progress.advance(grid)
            continue
        for cell in cells:
            if progress:
                progress._bars.update(grid, description=f"grid: {method} × {cell[3]} · {concept} · seed {seed}")
            try:
                records, attack_used = attack_job(spec, str(store.dir), cell, ukey, pre, progress)
            except Exception as exc:
                write_result(store, p, cell, [], exc, outcome)
            else:
                write_result(store, p, cell, records, None, outcome, {**used, **attack_used})
            if progress:
                progress.advance(grid)
    return outcome
