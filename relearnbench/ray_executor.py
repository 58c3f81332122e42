"""The Ray executor: each unlearning job and each attack-plus-evaluation job is a Ray task.

* Attack tasks take their unlearning task's result as an argument, so Ray runs them after it and
  unlearning runs once per (model, concept, method, seed).
* Workers write artifacts to the run directory, which must be on storage every node sees (checked
  at start on every node); only this driver writes the results store.
* A worker that dies mid-task is retried by Ray (``max_retries``); a plugin that raises is not
  retried (its error is deterministic) and the cell is recorded ``failed``; the grid goes on.
"""

from __future__ import annotations

import sys
import pathlib
import uuid

from relearnbench.errors import UserError
from relearnbench.executors import worker_spec
from relearnbench.runner import Outcome, attack_job, cached_plan, groups, pending, unlearn_job, write_result
from relearnbench.spec import Spec, spec_dict
from relearnbench.artifacts import Artifacts
from relearnbench.store import Store


def _unlearn(spec_d: dict, artifacts: Artifacts, model: str, concept: str, method: str, seed: int):
    return unlearn_job(worker_spec(spec_d), artifacts, model, concept, method, seed)


def _attack(spec_d: dict, artifacts: Artifacts, cell: tuple, unlearned):
    ukey, pre, used = unlearned
    records, attack_used = attack_job(worker_spec(spec_d), artifacts, cell, ukey, pre)
    return records, {**used, **attack_used}


def _probe(path: str) -> tuple[str, bool]:
    import socket

    return socket.gethostname(), pathlib.Path(path).exists()


def _init(spec: Spec):
    import ray

    if ray.is_initialized():
        return
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if spec.ray_address:
        ray.init(address=spec.ray_address, **kwargs)
    else:
        ray.init(**kwargs)


def check_shared_storage(run_dir: pathlib.Path):
    """Every alive node must see the run directory: write a token here, look for it there."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = run_dir.resolve() / f".ray-probe-{uuid.uuid4().hex}"
    token.write_text("probe")
    try:
        probe = ray.remote(num_cpus=0)(_probe)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(token)) for n in ray.nodes() if n["Alive"]]
        for host, seen in ray.get(refs, timeout=120):
            if not seen:
                raise UserError(f"Ray worker on {host} cannot see the run directory {run_dir.resolve()}; "
                                "put --out on storage every node mounts at the same path (NFS, Lustre, ...)")
    finally:
        token.unlink(missing_ok=True)


def run_ray(spec: Spec, store: Store, retry_failed: bool = False, quiet: bool = False) -> Outcome:
    p = cached_plan(spec)
    todo = pending(spec, store, retry_failed)
    outcome = Outcome(skipped=sum(1 for _ in spec.cells()) - len(todo))
    if not todo:  # a finished grid submits nothing and starts no cluster
        return outcome
    import ray

    _init(spec)
    check_shared_storage(store.dir)
    gpu = 1 if spec.device.startswith("cuda") else 0
    opts = dict(num_cpus=spec.cpus_per_task, num_gpus=gpu, max_retries=spec.max_retries, retry_exceptions=False)
    unlearn_task = ray.remote(**opts)(_unlearn)
    attack_task = ray.remote(**opts)(_attack)
    artifacts, spec_d = Artifacts(store.artifacts.root.resolve()), spec_dict(spec)
    refs = {}
    by_group = groups(todo)
    for group, cells in by_group.items():
        u = unlearn_task.remote(spec_d, artifacts, *group)
        for cell in cells:
            refs[attack_task.remote(spec_d, artifacts, cell, u)] = cell
    print(f"ray: submitted {len(by_group)} unlearning and {len(refs)} attack tasks", file=sys.stderr, flush=True)
    from relearnbench.progress import Progress

    with Progress(enabled=not quiet) as progress:
        bar = progress.add("grid (ray)", total=len(refs))
        waiting = list(refs)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            cell = refs[done[0]]
            try:
                records, used = ray.get(done[0])
            except Exception as exc:  # RayTaskError wraps the plugin's exception; WorkerCrashedError after retries
                write_result(store, p, cell, [], getattr(exc, "cause", None) or exc, outcome)
            else:
                write_result(store, p, cell, records, None, outcome, used)
            progress.advance(bar)
    return outcome

