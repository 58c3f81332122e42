"""An erased model trained elsewhere: the base model's UNet replaced by an external checkpoint.

``--methods checkpoint --set checkpoint.path=P`` trains nothing. Its "unlearned model" is the base
model (``--model``) with the UNet weights of ``P``; the base model itself stays the original for
everything else the harness does with it (attack data, benign references). So a published erased
model (ESD's, UCE's, a checkpoint zoo's, your own method's) is attacked and scored exactly like one
unlearned here. Several checkpoints in one grid are variants ``checkpoint@NAME``, each with its own
``--set checkpoint@NAME.path=P`` (or ``[set."checkpoint@NAME"]`` tables in a grid file).

``P`` may be
* a diffusers UNet folder (``config.json`` + weights), or a pipeline folder holding one in ``unet/``;
* a UNet state dict in diffusers' key names: ``.safetensors``, or ``.bin`` / ``.pt`` / ``.pth``;
* a CompVis (original Stable Diffusion) checkpoint, ``.ckpt`` / ``.pt`` / ``.safetensors``, whose
  ``model.diffusion_model.*`` weights diffusers' own ``convert_ldm_unet_checkpoint`` renames, with
  the base UNet's config.

Pickled files are loaded with ``torch.load(weights_only=True)``; one that needs more (a pickle can
run code) is refused unless ``trust_pickle`` is set. The artifact hash covers the weights' sha256,
so a changed file is a new model, never a stale cache hit.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
from dataclasses import dataclass

from relearnbench.api import Concept, Context, Method, Model
from relearnbench.errors import UserError

PICKLES = (".ckpt", ".pt", ".pth", ".bin")
FORMATS = "a diffusers UNet or pipeline folder, a .safetensors file, or a .ckpt / .pt / .pth / .bin file"
LDM_PREFIX = "model.diffusion_model."  # the UNet's keys in a CompVis checkpoint (diffusers' LDM_UNET_KEY)


class Checkpoint(Method):
    """an external UNet checkpoint (diffusers folder, state dict, CompVis .ckpt): attack a published erased model"""

    @dataclass(frozen=True)
    class Config:
        path: str = ""  # the checkpoint: a diffusers UNet/pipeline folder, .safetensors, .ckpt/.pt/.pth/.bin
        trust_pickle: bool = False  # load a pickle that weights_only=True refuses (it can run code: trusted files only)

    config_name = "checkpoint"
    version = "1"

    def __init__(self, config=None):
        super().__init__(config)
        self.file = weights_path(self.config.path, self.config_name)  # checked before any work

    def describe(self) -> dict:
        """What the artifact hash covers: class, version, the settings and the checkpoint's bytes."""
        d = super().describe()
        return {**d, "config": {**d["config"], "sha256": file_sha256(self.file)}}

    def unlearn(self, model: Model, concept: Concept, ctx: Context) -> None:
        state = load_unet_state(self.file, model.unet.config, self.config.trust_pickle, self.config_name)
        check_fits(state, model.unet.state_dict(), self.config.path)
        model.unet.load_state_dict(state)  # copied into the base UNet's float32 parameters


def weights_path(path: str, namespace: str = "checkpoint") -> pathlib.Path:
    """The file (or diffusers UNet folder) to read, or a one-line error saying what is wrong with ``path``."""
    if not path:
        raise UserError(f"{namespace}.path is not set: --set {namespace}.path=P with P {FORMATS}")
    p = pathlib.Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{namespace}.path={path}: no such file or folder")
    if p.is_dir():
        unet = p / "unet" if (p / "unet" / "config.json").exists() else p
        if not (unet / "config.json").exists():
            raise UserError(f"{namespace}.path={path}: a folder, but neither a diffusers UNet folder (config.json) "
                            "nor a pipeline folder with unet/config.json")
        return unet
    if p.suffix not in PICKLES + (".safetensors",):
        raise UserError(f"{namespace}.path={path}: unknown format {p.suffix or '(no suffix)'}; expected {FORMATS}")
    return p


_SHA256: dict[tuple, str] = {}  # (path, size, mtime): a multi-GB checkpoint is hashed once per process


def file_sha256(path: pathlib.Path) -> str:
    """sha256 of a file, or of a folder's files (names and bytes, sorted)."""
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    stamp = (str(path.resolve()), *((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if stamp not in _SHA256:
        h = hashlib.sha256()
        for f in files:
            if path.is_dir():
                h.update(str(f.relative_to(path)).encode() + b"\0")
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(2**24), b""):
                    h.update(block)
        _SHA256[stamp] = h.hexdigest()
    return _SHA256[stamp]


def load_unet_state(path: pathlib.Path, unet_config, trust_pickle: bool = False,
                    namespace: str = "checkpoint") -> dict:
    """The UNet state dict in diffusers' key names, from any of the supported formats."""
    if path.is_dir():
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel.from_pretrained(path).state_dict()
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:  # SafetensorError: truncated or not a safetensors file
            raise UserError(f"{namespace}.path={path}: not a readable safetensors file ({_line(e)})") from e
    else:
        state = _load_pickle(path, trust_pickle, namespace)
    if isinstance(state.get("state_dict"), dict):  # a Lightning / CompVis training checkpoint
        state = state["state_dict"]
    if any(k.startswith(LDM_PREFIX) for k in state):
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

        try:
            state = convert_ldm_unet_checkpoint(state, dict(unet_config))
        except Exception as e:  # the converter indexes blocks the base config says exist
            raise UserError(f"{namespace}.path={path}: a CompVis checkpoint that diffusers cannot convert with "
                            f"the base model's UNet config ({type(e).__name__}: {_line(e)}); is it for this model?") from e
    import torch

    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _load_pickle(path: pathlib.Path, trust_pickle: bool, namespace: str) -> dict:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:
        refused = re.search(r"GLOBAL (\S+)", str(e)) if "Weights only load failed" in str(e) else None
        if not refused:
            raise UserError(f"{namespace}.path={path}: cannot load it with torch.load ({type(e).__name__}: "
                            f"{_line(e)}); expected {FORMATS}") from e
        raise UserError(f"{namespace}.path={path} is a pickle holding {refused.group(1)}, which "
                        "torch.load(weights_only=True) refuses: unpickling it can run code. If you trust its source, "
                        f"--set {namespace}.trust_pickle=true; safer, convert it once to .safetensors "
                        "(docs/stable-diffusion.md, 'Attack published checkpoints')") from e
    if not isinstance(state, dict):
        raise UserError(f"{namespace}.path={path}: holds a {type(state).__name__}, not a state dict")
    return state


def check_fits(state: dict, base: dict, path: str) -> None:
    """One-line error when the checkpoint's tensors do not match the base UNet's names and shapes."""
    missing = [k for k in base if k not in state]
    unexpected = [k for k in state if k not in base]
    shapes = [k for k in base if k in state and tuple(state[k].shape) != tuple(base[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing ({_first(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({_first(unexpected)})" if unexpected else "",
                 f"{len(shapes)} of another shape ({', '.join(f'{k} {tuple(state[k].shape)} vs {tuple(base[k].shape)}' for k in shapes[:2])})"
                 if shapes else ""]
        raise UserError(f"checkpoint {path} does not fit the base model's UNet ({len(base)} tensors): "
                        f"{'; '.join(p for p in parts if p)}; is it a UNet of this --model's architecture?")


def _first(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] + ("..." if len(text) > 200 else "")
