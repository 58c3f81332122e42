"""CLIP, loaded from the local cache, a checkpoint file or the shipped toy-world CLIP, once per process.

Shared by the ``clip`` and ``related`` metrics and the ``clip_zeroshot`` judge. Weights are never
downloaded: a CLIP that is not on disk raises a UserError that says where it looked.
"""

from __future__ import annotations

import functools
import os
import pathlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from relearnbench.images import resize
from relearnbench.errors import UserError
from relearnbench.toy import TOY_DIR


@dataclass
class ClipModel:
    """A loaded CLIP with the preprocessing its image tower expects; outputs are unit-norm float32."""

    model: Any  # open_clip model (encode_image / encode_text)
    tokenizer: Any  # texts -> token ids [K, context_length]
    image_size: int
    mean: tuple
    std: tuple
    interpolation: str = "bicubic"

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        device = images.device
        self.model.to(device)
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        dtype = next(self.model.parameters()).dtype
        out = []
        for chunk in images.split(batch_size):
            # square images: open_clip's "resize shortest side, centre crop" is a plain resize
            x = resize(chunk.float(), self.image_size, self.interpolation)
            out.append(self.model.encode_image(((x - mean) / std).to(dtype)).float())
        return F.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: list[str], device=None) -> torch.Tensor:
        device = device or next(self.model.parameters()).device
        ids = self.tokenizer(list(texts)).to(device)
        return F.normalize(self.model.encode_text(ids).float(), dim=-1)


def clip_description(name: str, pretrained: str, path: str) -> dict:
    if name == "toy":
        folder = pathlib.Path(path) if path else TOY_DIR / "clip"
        return {"clip": "toy", "clip_path": str(folder)}
    return {"clip": name, "clip_pretrained": pretrained, **({"clip_path": path} if path else {})}


def load_clip_model(name: str, pretrained: str = "openai", path: str = "", device="cpu",
                    setting: str = "clip.path") -> ClipModel:
    """A CLIP, loaded once per process; ``setting`` is the --set key named in error messages."""
    try:
        clip = _load(name, pretrained, path)
    except UserError as e:
        raise UserError(str(e).replace("SETTING", setting)) from None
    clip.model.to(device)
    return clip


@functools.lru_cache(maxsize=4)
def _load(name: str, pretrained: str, path: str) -> ClipModel:
    if name == "toy":
        return _load_toy(path)
    import open_clip

    if name not in open_clip.list_models():
        raise UserError(f"unknown open_clip architecture {name!r}; e.g. ViT-B-32, ViT-L-14, or 'toy'")
    cfg = open_clip.get_pretrained_cfg(name, pretrained) if pretrained else {}
    checkpoint = pathlib.Path(path) if path else _cached_checkpoint(name, pretrained, cfg)
    if not checkpoint.exists():
        raise UserError(f"CLIP checkpoint {checkpoint} (SETTING) does not exist")
    if _is_torchscript(checkpoint):  # OpenAI's own .pt files are TorchScript archives
        model = open_clip.load_openai_model(str(checkpoint), precision="fp32", device="cpu")
    else:
        model = open_clip.create_model(name, pretrained=str(checkpoint), force_quick_gelu=cfg.get("quick_gelu", False))
    pre = open_clip.get_model_preprocess_cfg(model)
    size = pre.get("size", 224)
    return ClipModel(model=model.eval(), tokenizer=open_clip.get_tokenizer(name),
                     image_size=size if isinstance(size, int) else size[0],
                     mean=tuple(cfg.get("mean", pre.get("mean", open_clip.OPENAI_DATASET_MEAN))),
                     std=tuple(cfg.get("std", pre.get("std", open_clip.OPENAI_DATASET_STD))),
                     interpolation=cfg.get("interpolation", pre.get("interpolation", "bicubic")))


def _cached_checkpoint(name: str, pretrained: str, cfg: dict) -> pathlib.Path:
    """The checkpoint open_clip would download for ``name``/``pretrained``, if it is already cached."""
    import open_clip

    if not cfg:
        raise UserError(f"open_clip has no pretrained weights {pretrained!r} for {name}; known tags: "
                        f"{', '.join(open_clip.list_pretrained_tags_by_model(name)) or '(none)'}")
    looked = []
    how = f"run `python -c \"import open_clip; open_clip.create_model('{name}', pretrained='{pretrained}')\"`"
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE

        repo, filename = os.path.split(cfg["hf_hub"])  # "org/name/" means open_clip's default file names
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for fn in names:
            hit = try_to_load_from_cache(repo, fn)
            if isinstance(hit, str):
                return pathlib.Path(hit)
        looked.append(f"the Hugging Face cache {HF_HUB_CACHE} ({repo}: {', '.join(names)})")
        how = f"run `hf download {repo} {names[0]}` (it lands in that cache)"
    if cfg.get("url"):
        cached = pathlib.Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        if cached.exists():
            return cached
        looked.append(str(cached))
        if not cfg.get("hf_hub"):
            how = f"fetch {cfg['url']} to {cached}"
    raise UserError(f"no local copy of open_clip {name} ({pretrained}); looked in {' and '.join(looked)}. "
                    f"relearnbench never downloads weights: once where there is internet, {how}, "
                    f"or pass a checkpoint file with --set SETTING=FILE")


def clip_missing(name: str, pretrained: str, path: str, setting: str) -> list[str]:
    """The preflight of a CLIP: one line per missing file, or [] when ``load_clip_model`` will find it."""
    if name == "toy":
        from relearnbench.toy.clip import WEIGHTS

        folder = pathlib.Path(path) if path else TOY_DIR / "clip"
        return [] if (folder / WEIGHTS).exists() else [
            f"toy CLIP: {folder / WEIGHTS} is missing; rebuild with `relearnbench toy build --out DIR` "
            f"and pass --set {setting}=DIR/clip"]
    if path:
        return [] if pathlib.Path(path).exists() else [f"CLIP checkpoint {path} ({setting}) does not exist"]
    import open_clip

    try:
        _cached_checkpoint(name, pretrained, open_clip.get_pretrained_cfg(name, pretrained) if pretrained else {})
    except UserError as e:
        return [str(e).replace("SETTING", setting)]
    return []


def _is_torchscript(path: pathlib.Path) -> bool:
    import zipfile

    if path.suffix == ".safetensors" or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") for n in z.namelist())


def _load_toy(path: str) -> ClipModel:
    from relearnbench.toy.clip import load_clip

    folder = pathlib.Path(path) if path else TOY_DIR / "clip"
    try:
        loaded = load_clip(folder)
    except FileNotFoundError as e:
        raise UserError(str(e)) from e
    return _toy_bundle(loaded)


def _toy_bundle(loaded) -> ClipModel:
    """``load_clip`` gives (model, PIL preprocess, tokenizer); the preprocessing is read from the
    model's own config (size 32, the world's mean and std) and applied to tensors."""
    import open_clip

    model, _, tokenizer = loaded
    pre = open_clip.get_model_preprocess_cfg(model)
    size = pre.get("size", 32)
    return ClipModel(model=model.eval(), tokenizer=tokenizer, image_size=size if isinstance(size, int) else size[0],
                     mean=tuple(pre["mean"]), std=tuple(pre["std"]), interpolation=pre.get("interpolation", "bicubic"))


def clip_scores(clip: ClipModel, images: torch.Tensor, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """100 · max(cos, 0) of each image with its own text, [N] on the CPU."""
    image = clip.encode_images(images, batch_size)
    unique = sorted(set(texts))
    text = clip.encode_text(unique, device=image.device)
    row = torch.tensor([unique.index(t) for t in texts], device=image.device)
    return (100 * (image * text[row]).sum(-1).clamp(min=0)).cpu()
