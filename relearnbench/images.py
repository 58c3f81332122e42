"""Image helpers any layer may use: reading an image folder (the diffusers ``metadata.jsonl`` convention) and
resizing square images. No model and no metric here."""

from __future__ import annotations

import json
import pathlib
from typing import TYPE_CHECKING

from relearnbench.errors import UserError

if TYPE_CHECKING:  # imported where used: the torch-free fakes' grids import this module
    import torch


def folder_images(folder: pathlib.Path, resolution: int) -> tuple[torch.Tensor, list[str]]:
    """(images [N,3,R,R] in [0,1], caption per image) of a folder whose ``metadata.jsonl`` lines are
    ``{"file_name": ..., "text": ...}``, each image resized to ``resolution``."""
    import numpy as np
    import torch
    from PIL import Image

    meta = folder / "metadata.jsonl"
    if not meta.exists():
        raise UserError(f"image folder {folder} has no metadata.jsonl "
                        '(one line per image: {"file_name": "0.png", "text": "a caption"})')
    images, captions = [], []
    for line in meta.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            img = Image.open(folder / row["file_name"]).convert("RGB").resize((resolution, resolution))
            images.append(torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float() / 255)
            captions.append(row["text"])
    if not images:
        raise UserError(f"image folder {folder}: metadata.jsonl lists no images")
    return torch.stack(images), captions


def resize(images: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Square images [N,3,H,W] in [0, 1] to ``size`` × ``size``, antialiased when shrinking (SD's 512 → 224)."""
    import torch

    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode=mode, antialias=True,
                                           align_corners=False).clamp(0, 1)
