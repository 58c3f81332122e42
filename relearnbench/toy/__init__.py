"""The embedded toy world: renderer, tiny SD model, judge and CLIP, and the build that trains them."""

import pathlib

TOY_DIR = pathlib.Path(__file__).parent / "assets"  # the shipped model, judge and CLIP
