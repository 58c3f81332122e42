"""The toy world: 32×32 pictures of one coloured, patterned shape on a light background.

Two erasable concepts live here, each with a benign neighbour that shares its visual features
(what lets a finetune on the neighbour relearn the concept, as "skin" does for nudity):

* object-like ``triangle``: related ``diamond`` (slanted edges, pointed apexes), unrelated
  ``circle`` / ``square`` / ``cross``;
* style-like ``striped``: related ``checkered`` (the same horizontal bands at the same period,
  cut by vertical ones), unrelated ``dotted`` / ``plain``.

Everything is numpy and seeded; nothing here trains.
"""

from __future__ import annotations

import re

import numpy as np

SIZE = 32
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = ("red", "green", "blue", "yellow", "purple")
PATTERNS = ("plain", "striped", "checkered", "dotted")
ATTRIBUTES = {"shape": SHAPES, "colour": COLOURS, "pattern": PATTERNS}

RGB = {
    "red": (0.86, 0.14, 0.12),
    "green": (0.13, 0.62, 0.20),
    "blue": (0.14, 0.30, 0.88),
    "yellow": (0.96, 0.84, 0.10),
    "purple": (0.58, 0.18, 0.72),
}
PERIOD = 6  # pixels per stripe / checker / dot repeat: coarse enough to survive the 2× VAE
_SUPERSAMPLE = 4  # anti-aliased edges, as a camera would give

# words a prompt may use for a value; plurals and common variants, all lower case
_SYNONYMS = {
    "shape": {"circle": ["circles", "disc", "disk"], "square": ["squares"], "triangle": ["triangles"],
              "diamond": ["diamonds", "rhombus"], "cross": ["crosses", "plus"]},
    "colour": {"red": [], "green": [], "blue": [], "yellow": [], "purple": ["violet"]},
    "pattern": {"plain": ["solid"], "striped": ["stripes", "stripy", "stripe"],
                "checkered": ["checked", "chequered", "checkerboard", "checks"],
                "dotted": ["dots", "spotted", "polka"]},
}
_WORD_TO_VALUE = {w: (attr, v) for attr, table in _SYNONYMS.items() for v, words in table.items()
                  for w in [v, *words]}


def caption(shape: str | None, colour: str | None, pattern: str | None, template: str = "a {}") -> str:
    """Plain English: ``caption("triangle", "red", "striped") == "a red striped triangle"``.

    An attribute given as None is left unnamed ("a red shape"); "plain" goes first because
    "a plain red triangle" is how people say it."""
    words = []
    if pattern == "plain":
        words.append("plain")
    if colour:
        words.append(colour)
    if pattern and pattern != "plain":
        words.append(pattern)
    words.append(shape or "shape")
    return template.format(" ".join(words))


def parse_prompt(text: str) -> dict[str, str]:
    """The attributes a prompt names: ``"a photo of a triangle" -> {"shape": "triangle"}``.

    The first mention of an attribute wins; unknown words are ignored."""
    named: dict[str, str] = {}
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _WORD_TO_VALUE:
            attr, value = _WORD_TO_VALUE[word]
            named.setdefault(attr, value)
    return named


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(ax, ay) <= 0.82 * r
    if shape == "diamond":
        return ax + ay <= 1.15 * r
    if shape == "triangle":  # apex up; as wide as it is tall, and about as large as the others
        top, base = -1.1 * r, 0.85 * r
        return (dy >= top) & (dy <= base) & (ax <= (dy - top) / (base - top) * 1.12 * r)
    if shape == "cross":
        w = 0.34 * r
        return ((ax <= w) & (ay <= r)) | ((ay <= w) & (ax <= r))
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def _pattern_mask(pattern: str, x: np.ndarray, y: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """True where the darker second tone is painted."""
    half = PERIOD / 2
    u, v = x + phase[0], y + phase[1]
    if pattern == "plain":
        return np.zeros_like(x, dtype=bool)
    if pattern == "striped":
        return (v % PERIOD) < half
    if pattern == "checkered":
        return ((u % PERIOD) < half) ^ ((v % PERIOD) < half)
    if pattern == "dotted":
        cu, cv = u % PERIOD - half, v % PERIOD - half
        return cu * cu + cv * cv <= 1.6 ** 2
    raise ValueError(f"unknown pattern {pattern!r}; known: {PATTERNS}")


def render(shape: str, colour: str, pattern: str, rng: np.random.Generator) -> np.ndarray:
    """One image, uint8 H×W×3. Position, size, tones and background vary with ``rng``."""
    if colour not in RGB:
        raise ValueError(f"unknown colour {colour!r}; known: {COLOURS}")
    ss = _SUPERSAMPLE
    coords = (np.arange(SIZE * ss) + 0.5) / ss
    x, y = np.meshgrid(coords, coords)

    r = rng.uniform(8.5, 11.5)
    reach = 1.12 * r + 1  # every shape fits in a box of half-side 1.12 r around its centre
    cx, cy = rng.uniform(reach, SIZE - reach, size=2)
    phase = rng.uniform(0, PERIOD, size=2)

    # light backgrounds only: the pattern's dark tone must stay distinct from them
    grey = rng.uniform(0.62, 0.95)
    tint = rng.uniform(-0.04, 0.04, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = rng.uniform(0, 0.08) * ((x - SIZE / 2) * np.cos(angle) + (y - SIZE / 2) * np.sin(angle)) / SIZE
    img = np.clip(grey + tint + ramp[..., None], 0, 1)

    base = np.clip(np.array(RGB[colour]) * rng.uniform(0.9, 1.08) + rng.uniform(-0.04, 0.04, 3), 0, 1)
    dark = base * 0.3
    inside = _shape_mask(shape, x - cx, y - cy, r)
    second = _pattern_mask(pattern, x, y, phase)
    fill = np.where(second[..., None], dark, base)
    img = np.where(inside[..., None], fill, img)

    img = img.reshape(SIZE, ss, SIZE, ss, 3).mean(axis=(1, 3))
    return (img * 255 + 0.5).astype(np.uint8)


def random_attributes(rng: np.random.Generator, fixed: dict[str, str] | None = None) -> dict[str, str]:
    """A full attribute assignment: ``fixed`` values kept, the rest uniform."""
    fixed = fixed or {}
    return {a: fixed.get(a) or values[rng.integers(len(values))] for a, values in ATTRIBUTES.items()}


def sample_images(prompts: list[str], n_per_prompt: int, seed: int):
    """Real images matching each prompt, the unnamed attributes drawn at random.

    Returns (FloatTensor [len(prompts) * n_per_prompt, 3, 32, 32] in [0, 1], full captions),
    grouped by prompt in order; the same seed gives the same images."""
    import torch

    rng = np.random.default_rng(seed)
    images, captions = [], []
    for prompt in prompts:
        named = parse_prompt(prompt)
        if not named:
            raise ValueError(f"prompt {prompt!r} names no attribute of the toy world {ATTRIBUTES}")
        for _ in range(n_per_prompt):
            a = random_attributes(rng, named)
            images.append(render(a["shape"], a["colour"], a["pattern"], rng))
            captions.append(caption(a["shape"], a["colour"], a["pattern"]))
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return batch, captions


TEMPLATES = ("a {}", "a photo of a {}", "an image of a {}")


def random_caption(attrs: dict[str, str], rng: np.random.Generator) -> str:
    """A training caption naming a random subset of ``attrs`` (at least one), so that the model
    and the CLIP learn prompts such as "a triangle" or "a striped shape" as well as full ones."""
    keep = {"shape": 0.85, "colour": 0.7, "pattern": 0.7}
    while True:
        named = {a: v for a, v in attrs.items() if rng.random() < keep[a]}
        if named:
            break
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    return caption(named.get("shape"), named.get("colour"), named.get("pattern"), template)


def render_dataset(n: int, seed: int):
    """n random images, balanced over the attribute grid: (uint8 tensor [n, 3, 32, 32],
    {attr: LongTensor [n] of indices into ATTRIBUTES[attr]})."""
    import torch

    rng = np.random.default_rng(seed)
    grid = [(s, c, p) for s in SHAPES for c in COLOURS for p in PATTERNS]
    order = np.concatenate([rng.permutation(len(grid)) for _ in range(-(-n // len(grid)))])[:n]
    images = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i, k in enumerate(order):
        images[i] = render(*grid[k], rng)
    labels = {"shape": [SHAPES.index(grid[k][0]) for k in order],
              "colour": [COLOURS.index(grid[k][1]) for k in order],
              "pattern": [PATTERNS.index(grid[k][2]) for k in order]}
    return (torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            {a: torch.tensor(v) for a, v in labels.items()})
