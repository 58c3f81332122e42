"""Write relearnbench/memory_shapes.json: the figures the memory model reads of each architecture (relearnbench.memory's
Shape: parameter counts, the trained sets' sizes, activation bytes per UNet batch and resolution, the VAE's), counted
anew on the meta device for the models and batch sizes of the shipped grids, so that ``relearnbench run --dry-run``
and the preflight read them instead of importing diffusers and counting them (seconds per architecture).

    python benchmarks/memory_shapes.py          # ~1-2 min on 2 cores; then commit the file

Run it after a change to torch, diffusers or transformers, to models.ARCHITECTURES or to the counting code
(memory._COUNTING, models.trainable): the figures are kept under a key of all of these, so until then the old ones
are not read (the memory model counts them again in each run) and tests/core/test_memory_shapes.py fails.
The figures are the counting code's own: tests/core/test_memory_shapes.py counts the sd14 and toy entries again.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

# (grid, flags, --set): the shipped grids on their models, and the models and resolutions the CPU tests and
# benchmarks/memory.py run them at; a batch or resolution left out is counted and cached when first needed
CASES = [
    ("paper-sd14", {}, []),
    ("paper-sd14", {}, ["meta.forward_batch=1"]),  # benchmarks/memory.py's SAVINGS
    ("paper-sdxl", {}, []),
    ("paper-sd14", {"models": ["sd14-random"]}, ["model.resolution=64"]),  # tests/toy/test_sd14_random.py
    ("paper-sdxl", {"models": ["sdxl-random"]}, ["model.resolution=64"]),  # tests/toy/test_sdxl_random.py
    ("paper-sd14", {"models": ["sd2-random"]}, []),  # SD-2.1 at 768 px
    ("full", {"models": ["sd14-random"]}, []),  # every method's and attack's [sd14] preset at 512 px
    ("quick", {}, []),
    ("full", {}, []),  # the toy model
]


def main() -> None:
    from relearnbench import memory
    from relearnbench.config import parse_sets
    from relearnbench.runner import plan
    from relearnbench.spec import build_spec, load_grid

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RELEARNBENCH_CACHE"] = tmp  # nothing read from (or left in) the user's cache
        memory._KEPT = {}  # nor from the shipped table: every figure counted now
        prompts = os.path.join(tmp, "prompts.csv")  # the memory model reads no prompt; paper-sd14's concept needs a CSV
        with open(prompts, "w") as f:
            f.write("prompt,evaluation_seed,evaluation_guidance\na person,1,7.5\n")
        for grid, flags, sets in CASES:
            concept = [f"concept.prompts={prompts}"] if grid == "paper-sd14" else []
            spec = build_spec(load_grid(grid), flags, parse_sets(concept + sets))
            memory.estimates(plan(spec))
            print(f"{grid} {flags} {sets}: counted", file=sys.stderr, flush=True)
    shapes = {}
    for shape in memory._SHAPES.values():
        if shape.key is not None:
            entry = shapes.setdefault(shape.key, {"model": shape.label, "environment": memory.environment(),
                                                  "values": {}})
            entry["values"].update(shape.values)
    memory.SHAPES_FILE.write_text(json.dumps({
        "about": "relearnbench.memory's figures of each architecture (Shape), counted on the meta device by "
                 "benchmarks/memory_shapes.py; read where the key (architecture or toy folder, resolution, "
                 "environment) matches", "shapes": shapes}, indent=1, sort_keys=True) + "\n")
    for entry in shapes.values():
        print(f"{entry['model']}: {len(entry['values'])} figures", file=sys.stderr)
    print(f"wrote {memory.SHAPES_FILE}")


if __name__ == "__main__":
    main()
