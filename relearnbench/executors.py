"""Executors run a grid's pending cells: ``local`` (this process, or ``--jobs N`` worker processes on
this machine) and ``ray`` (relearnbench.ray_executor, for clusters).

With ``--jobs N`` each worker process runs one job at a time with ``cores // N`` threads (or one GPU):
an unlearning job per (model, concept, method, seed), then, when it is done, one attack job per
attack of that group, which reuses the unlearned artifact. Only this process writes the store.
"""

from __future__ import annotations

import collections
import os
import sys
import threading

from relearnbench.errors import UserError
from relearnbench.runner import Outcome, attack_job, cached_plan, groups, pending, unlearn_job, write_result
from relearnbench.spec import Spec, spec_dict
from relearnbench.artifacts import Artifacts
from relearnbench.store import Store


def run_local(spec: Spec, store: Store, retry_failed: bool = False, progress=None) -> Outcome:
    """``--jobs`` worker processes (default: one per core, or per GPU), or this process for a single job."""
    p = cached_plan(spec)
    todo = pending(spec, store, retry_failed)
    # worker processes whenever the command asks for more than one job, however few cells are left: a cell
    # computes with the threads of the command (cores // jobs), so a resumed run gives the bits of an
    # uninterrupted one (one pending cell in this process would run on every core, and sum in another order)
    if spec.gpus or (spec.jobs or default_jobs(spec)) > 1:
        return run_jobs(spec, store, spec.jobs or default_jobs(spec), retry_failed, progress)
    outcome = Outcome(skipped=sum(1 for _ in spec.cells()) - len(todo))
    grid = progress.add("grid", total=len(todo)) if progress else None
    for group, cells in groups(todo).items():  # unlearning runs once per (model, concept, method, seed)
        model, concept, method, seed = group
        try:
            if progress:
                progress.describe(grid, f"grid: unlearn {method} · {concept} · seed {seed}")
            ukey, pre, used = unlearn_job(spec, store.artifacts, model, concept, method, seed, progress)
        except Exception as exc:  # a plugin that raises loses its cells only; the grid goes on
            for cell in cells:
                write_result(store, p, cell, [], exc, outcome)
                if progress:
                    progress.advance(grid)
            continue
        for cell in cells:
            if progress:
                progress.describe(grid, f"grid: {method} × {cell[3]} · {concept} · seed {seed}")
            try:
                records, attack_used = attack_job(spec, store.artifacts, cell, ukey, pre, progress)
            except Exception as exc:
                write_result(store, p, cell, [], exc, outcome)
            else:
                write_result(store, p, cell, records, None, outcome, {**used, **attack_used})
            if progress:
                progress.advance(grid)
    return outcome


# -- --jobs N: worker processes on this machine ------------------------------------------------------
def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def gpu_list(spec: Spec) -> list[str]:
    """The GPUs workers run on: ``--gpus``, else every visible one with ``--device cuda``, else none."""
    if spec.gpus:
        gpus = [g.strip() for g in spec.gpus.split(",") if g.strip()]
        if not gpus:
            raise UserError("--gpus: expected a comma list of GPU indices, e.g. 0,1")
        return gpus
    if spec.device.startswith("cuda"):
        if ":" in spec.device:  # one named GPU
            return [spec.device.partition(":")[2]]
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    return []


def default_jobs(spec: Spec) -> int:
    """One worker per GPU on CUDA, else one single-thread worker per core (as Ray on a laptop)."""
    gpus = gpu_list(spec)
    return len(gpus) if gpus else cores()


def worker_spec(d: dict) -> Spec:
    """The spec as a worker process sees it: ``--plugin`` modules registered there too, and ``cuda``
    for the one GPU the worker's ``CUDA_VISIBLE_DEVICES`` names."""
    from relearnbench.registry import load_plugin

    spec = Spec(**d)
    for module in spec.plugins:
        try:
            load_plugin(module)
        except UserError:
            pass  # already registered in this worker
    if spec.device.startswith("cuda"):
        spec.device = "cuda"
    return spec


def _start_worker(threads: int, gpus) -> None:
    """Worker initializer: its share of the cores (or its GPU), and exit when the driver dies."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)  # torch.set_num_threads at import
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus.get()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    parent = os.getppid()

    def orphaned():  # a killed driver must not leave workers behind
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()


def _unlearn(spec_d: dict, artifacts: Artifacts, model: str, concept: str, method: str, seed: int):
    return unlearn_job(worker_spec(spec_d), artifacts, model, concept, method, seed)


def _attack(spec_d: dict, artifacts: Artifacts, cell: tuple, ukey: str, pre):
    return attack_job(worker_spec(spec_d), artifacts, cell, ukey, pre)


def run_jobs(spec: Spec, store: Store, jobs: int, retry_failed: bool = False, progress=None) -> Outcome:
    """``jobs`` worker processes. A worker takes a ready attack before a new unlearning job, so finished
    cells reach the store early and unlearned models do not pile up; the store is written here only."""
    import concurrent.futures as cf
    import multiprocessing

    p = cached_plan(spec)
    todo = pending(spec, store, retry_failed)
    outcome = Outcome(skipped=sum(1 for _ in spec.cells()) - len(todo))
    if not todo:
        return outcome
    by_group = groups(todo)
    gpus = gpu_list(spec)
    jobs = min(jobs, len(gpus) or jobs)
    threads = 1 if gpus else max(1, cores() // jobs)  # of the command, not of the cells left (see run_local)
    jobs = min(jobs, len(todo))  # no idle workers
    ctx = multiprocessing.get_context("spawn")  # a fork of a process with torch's threads can hang
    slots = None
    if gpus:
        slots = ctx.Queue()
        for g in gpus[:jobs]:
            slots.put(g)
    artifacts, spec_d = Artifacts(store.artifacts.root.resolve()), spec_dict(spec)
    bar = progress.add(f"grid ({jobs} jobs)", total=len(todo)) if progress else None
    waiting, ready, running = collections.deque(by_group), collections.deque(), {}
    pool = cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_start_worker, initargs=(threads, slots))
    try:
        while waiting or ready or running:
            while len(running) < jobs and (ready or waiting):
                if ready:
                    cell, ukey, pre, used = ready.popleft()
                    running[pool.submit(_attack, spec_d, artifacts, cell, ukey, pre)] = ("attack", cell, used)
                else:
                    group = waiting.popleft()
                    running[pool.submit(_unlearn, spec_d, artifacts, *group)] = ("unlearn", group, None)
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in done:
                kind, key, used = running.pop(future)
                try:
                    result = future.result()
                except cf.process.BrokenProcessPool as exc:
                    raise RuntimeError("a worker process died (out of memory?); rerun the same command to "
                                       "resume: finished cells are kept") from exc
                except Exception as exc:  # a plugin that raises loses its cells only; the grid goes on
                    for cell in (by_group[key] if kind == "unlearn" else [key]):
                        write_result(store, p, cell, [], exc, outcome)
                        if progress:
                            progress.advance(bar)
                    continue
                if kind == "unlearn":
                    ready.extend((cell, *result) for cell in by_group[key])
                else:
                    records, attack_used = result
                    write_result(store, p, key, records, None, outcome, {**used, **attack_used})
                    if progress:
                        progress.advance(bar)
    except BaseException:  # Ctrl-C or a dead worker: stop the others now rather than after their jobs
        for process in list((pool._processes or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    print(f"{jobs} worker processes, {threads} threads each" + (f", GPUs {','.join(gpus[:jobs])}" if gpus else ""),
          file=sys.stderr, flush=True)
    return outcome
