"""Where a run's time went, from its own records: unlearning, attack training, sampling, scoring, and what
no stage accounts for (process start-up, imports, model loads, the store, idle workers).

    python benchmarks/stages.py RUN_DIR --wall SECONDS [--jobs N]

Each record carries the seconds of the stage that made its model (``seconds``: the unlearning for ``pre``,
the attack's training up to the step for ``post@N``) and of its evaluation (``eval_seconds``, of which
``info.sample_seconds`` sampled images). Every figure is counted once: unlearning and the ``pre``
evaluation once per (model, concept, method, seed), each curve point once per cell.
"""

from __future__ import annotations

import argparse
import json

from relearnbench.store import Store


def breakdown(run_dir: str) -> dict[str, float]:
    df = Store(run_dir, create=False).records_frame()
    # a record copied from another stage (post@0 repeats pre) has eval_seconds 0 and its source's info
    df["sample_seconds"] = [json.loads(i or "{}").get("sample_seconds", 0.0) if e > 0 else 0.0
                            for i, e in zip(df["info"], df["eval_seconds"])]
    group, cell = ["model", "concept", "method", "seed"], ["model", "concept", "method", "attack", "seed"]
    pre = df[df.stage == "pre"].groupby(group).first()
    points = df[df.stage != "pre"].groupby(cell + ["stage"]).first().reset_index()
    # "post" repeats the last curve point unless the attack evaluated "post" itself
    curved = set(map(tuple, points[points.stage.str.startswith("post@")][cell].values))
    points = points[[stage != "post" or tuple(key) not in curved for stage, key in zip(points.stage, points[cell].values)]]
    evaluation = pre.eval_seconds.sum() + points.eval_seconds.sum()
    sampling = pre.sample_seconds.sum() + points.sample_seconds.sum()
    return {"unlearn": float(pre.seconds.sum()), "attack": float(points.groupby(cell).seconds.max().sum()),
            "sampling": float(sampling), "scoring": float(evaluation - sampling)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--wall", type=float, required=True, help="the run's wall seconds")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes the run used")
    a = ap.parse_args()
    stages = breakdown(a.run_dir)
    work = sum(stages.values())
    outside = a.wall * a.jobs - work
    print(f"wall {a.wall:.1f} s with {a.jobs} worker process(es): {a.wall * a.jobs:.1f} worker-seconds")
    for name, s in stages.items():
        print(f"  {name:<9} {s:8.1f} s  {100 * s / (a.wall * a.jobs):5.1f} %")
    print(f"  {'harness':<9} {outside:8.1f} s  {100 * outside / (a.wall * a.jobs):5.1f} %  "
          "(in no stage: start-up, imports, model loads, store, idle workers)")
    print(f"ratio to the bare loops: {a.wall * a.jobs / work:.2f} (worker-seconds / seconds inside the stages)")


if __name__ == "__main__":
    main()
