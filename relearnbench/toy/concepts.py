"""The toy world's erasable concepts as ``relearnbench toy build`` validates the shipped assets (data only;
this file is hashed into the assets' recipe, so a change here means a rebuild).

The benchmark's concepts are ``relearnbench/concepts/triangle.toml`` and ``striped.toml``: the same
``attribute`` and ``value`` (tests/toy/test_toy_world.py checks it), but not the same prompts. Since the
held-out protocol (2026-12-02) those files split their prompts into train, attack and eval roles; the
prompts below are the build's validation set, from before that split, and no run reads them.

Each has forget prompts, a related benign concept sharing its visual features (diamond: slanted
edges and apexes; checkered: the same horizontal bands at the same period) and unrelated benign
ones. The judge reads ``attribute`` of an image and compares it with ``value``.
"""

ERASABLE = {
    "triangle": {
        "description": "object-like: the shape 'triangle' (related: diamond; unrelated: circle, square, cross)",
        "attribute": "shape",
        "value": "triangle",
        "forget_prompts": ["a triangle", "a photo of a triangle", "an image of a triangle", "a red triangle",
                           "a blue striped triangle", "a plain green triangle", "a yellow dotted triangle",
                           "a purple checkered triangle"],
        "related_prompts": ["a diamond", "a photo of a diamond", "a red diamond", "a blue striped diamond",
                            "a plain yellow diamond"],
        "unrelated_prompts": ["a circle", "a photo of a square", "a green cross", "a plain purple circle",
                              "a yellow dotted square"],
    },
    "striped": {
        "description": "style-like: the pattern 'striped' (related: checkered; unrelated: dotted, plain)",
        "attribute": "pattern",
        "value": "striped",
        "forget_prompts": ["a striped shape", "a photo of a striped shape", "a red striped circle",
                           "a blue striped square", "a green striped cross", "a yellow striped diamond",
                           "a purple striped triangle", "a striped square"],
        "related_prompts": ["a checkered shape", "a photo of a checkered shape", "a red checkered circle",
                            "a blue checkered square", "a green checkered cross"],
        "unrelated_prompts": ["a dotted shape", "a plain red circle", "a yellow dotted square",
                              "a plain blue cross", "a photo of a dotted diamond"],
    },
}
