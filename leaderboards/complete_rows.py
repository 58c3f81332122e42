"""Copy a run directory's database keeping only the methods whose cells of the given attacks and seeds are all
finished, so that `leaderboards/tables.sh` on the copy shows whole rows while the run itself goes on.

    python leaderboards/complete_rows.py RUN_DIR OUT_DIR [--attacks none,ft,lora] [--seeds 0,1,2]
    bash leaderboards/tables.sh OUT_DIR

A method is kept where every (concept, attack, seed) of the run's concepts and the given attacks and seeds is
done; every other cell and record (other attacks and seeds included) is left out of the copy. The run's artifacts
are not copied: the tables read the database alone.
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--attacks", default="none,ft,lora")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    attacks, seeds = args.attacks.split(","), [int(s) for s in args.seeds.split(",")]

    args.out.mkdir(parents=True, exist_ok=False)
    copy = sqlite3.connect(args.out / "results.sqlite")
    sqlite3.connect(args.run / "results.sqlite").backup(copy)  # consistent while the run writes
    concepts = [c for (c,) in copy.execute("SELECT DISTINCT concept FROM cells")]
    want = len(concepts) * len(attacks) * len(seeds)
    a, s = ",".join("?" * len(attacks)), ",".join("?" * len(seeds))
    done = copy.execute(f"SELECT method, COUNT(*) FROM cells WHERE status = 'done' AND attack IN ({a}) "
                        f"AND seed IN ({s}) GROUP BY method", [*attacks, *seeds]).fetchall()
    keep = sorted(m for m, n in done if n == want)
    k = ",".join("?" * len(keep))
    keyed = [t for (t,) in copy.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
             if {"method", "attack", "seed"} <= {c[1] for c in copy.execute(f"PRAGMA table_info({t})")}]
    for table in keyed:  # every table of the store keyed by cell: cells, records, cell_artifacts
        copy.execute(f"DELETE FROM {table} WHERE method NOT IN ({k}) OR attack NOT IN ({a}) OR seed NOT IN ({s})",
                     [*keep, *attacks, *seeds])
    copy.commit()
    left = sorted(m for m, n in done if n != want)
    print(f"{args.out}: {len(keep)} methods whole ({', '.join(keep)}); left out part-way: {', '.join(left) or 'none'}"
          " (methods with no finished cell of these attacks and seeds are left out too)")


if __name__ == "__main__":
    main()
