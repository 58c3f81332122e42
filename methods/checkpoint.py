"""An erased model trained elsewhere: the base model's UNet (or text encoder) replaced by an external checkpoint.

``--methods checkpoint --set checkpoint.path=P`` trains nothing. Its "unlearned model" is the base
model (``--model``) with the UNet weights of ``P``, and with ``--set checkpoint.text_encoder=E`` the text
encoder of ``E`` (a text-encoder release such as AdvUnlearn's; ``path`` may then be left unset, the UNet staying
the base's); the base model itself stays the original for
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

``E`` may be
* a transformers text-encoder folder (``config.json`` + weights: AdvUnlearn's Hugging Face release, e.g. its
  ``nudity_unlearned/``), or a pipeline folder holding one in ``text_encoder/`` (and SDXL's ``text_encoder_2/``,
  which replaces the second encoder: ``relearnbench export`` writes both);
* a state dict, ``.safetensors`` or ``.bin`` / ``.pt`` / ``.pth``, in transformers' key names (with or without the
  ``text_model.`` prefix) or as AdvUnlearn's training script saves it (its ``CustomTextEncoder``: ``text_encoder.*``).

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
    """an external checkpoint (a UNet: diffusers folder, state dict, CompVis .ckpt; and/or a text encoder):
    attack a published erased model"""

    @dataclass(frozen=True)
    class Config:
        path: str = ""  # the checkpoint: a diffusers UNet/pipeline folder, .safetensors, .ckpt/.pt/.pth/.bin
        text_encoder: str = ""  # a text-encoder release: its folder, a pipeline folder, a state dict ("" = the base's)
        trust_pickle: bool = False  # load a pickle that weights_only=True refuses (it can run code: trusted files only)

    config_name = "checkpoint"
    version = "1"

    def __init__(self, config=None):
        super().__init__(config)
        te = self.config.text_encoder  # checked before any work: a UNet, a text encoder or both
        self.file = weights_path(self.config.path, self.config_name) if self.config.path or not te else None
        self.encoder_file = encoder_path(te, self.config_name) if te else None

    def describe(self) -> dict:
        """What the artifact hash covers: class, version, the settings and the checkpoints' bytes (a UNet-only
        checkpoint's as before text encoders were read: no text_encoder key)."""
        d = super().describe()
        config = {k: v for k, v in d["config"].items() if k != "text_encoder" or v}
        if self.file is not None:
            config["sha256"] = file_sha256(self.file)
        if self.encoder_file is not None:
            config["text_encoder_sha256"] = file_sha256(self.encoder_file)
        return {**d, "config": config}

    def unlearn(self, model: Model, concept: Concept, ctx: Context) -> None:
        if self.file is not None:
            state = load_unet_state(self.file, model.unet.config, self.config.trust_pickle, self.config_name)
            check_fits(state, model.unet.state_dict(), self.config.path)
            model.unet.load_state_dict(state)  # copied into the base UNet's float32 parameters
        if self.encoder_file is not None:
            for name, state in load_encoder_states(self.encoder_file, model, self.config.trust_pickle,
                                                   self.config_name).items():
                encoder = getattr(model, name)
                check_fits(state, encoder.state_dict(), self.config.text_encoder, name.replace("_", " "))
                encoder.load_state_dict(state)  # copied into the base's parameters, in their dtype (frozen)


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
    state = _read_state(path, f"{namespace}.path", trust_pickle, namespace, FORMATS)
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


def _read_state(path: pathlib.Path, key: str, trust_pickle: bool, namespace: str, formats: str) -> dict:
    """The state dict in a .safetensors or pickle file, or a one-line error naming the setting ``key`` that gave
    ``path`` (``checkpoint.path``, ``checkpoint.text_encoder``) and the ``formats`` it takes."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # SafetensorError: truncated or not a safetensors file
            raise UserError(f"{key}={path}: not a readable safetensors file ({_line(e)})") from e
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:
        refused = re.search(r"GLOBAL (\S+)", str(e)) if "Weights only load failed" in str(e) else None
        if not refused:
            raise UserError(f"{key}={path}: cannot load it with torch.load ({type(e).__name__}: "
                            f"{_line(e)}); expected {formats}") from e
        raise UserError(f"{key}={path} is a pickle holding {refused.group(1)}, which "
                        "torch.load(weights_only=True) refuses: unpickling it can run code. If you trust its source, "
                        f"--set {namespace}.trust_pickle=true; safer, convert it once to .safetensors "
                        "(docs/stable-diffusion.md, 'Attack published checkpoints')") from e
    if not isinstance(state, dict):
        raise UserError(f"{key}={path}: holds a {type(state).__name__}, not a state dict")
    return state


ENCODER_FORMATS = "a text-encoder or pipeline folder, a .safetensors file, or a .pt / .pth / .bin file"
ENCODER_PREFIX = "text_encoder."  # AdvUnlearn's train-scripts/utils/util.py save_text_encoder: a CustomTextEncoder's
# state dict, the CLIPTextModel under text_encoder.* (and its submodules again under embedding.*, encoder.*, ...)


def encoder_path(path: str, namespace: str = "checkpoint") -> pathlib.Path:
    """The text-encoder file or folder to read, or a one-line error saying what is wrong with ``path``."""
    p = pathlib.Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{namespace}.text_encoder={path}: no such file or folder")
    if p.is_dir():
        if not ((p / "text_encoder" / "config.json").exists() or (p / "config.json").exists()):
            raise UserError(f"{namespace}.text_encoder={path}: a folder, but neither a text-encoder folder "
                            "(config.json) nor a pipeline folder with text_encoder/config.json")
        return p
    if p.suffix not in PICKLES + (".safetensors",):
        raise UserError(f"{namespace}.text_encoder={path}: unknown format {p.suffix or '(no suffix)'}; "
                        f"expected {ENCODER_FORMATS}")
    return p


def load_encoder_states(path: pathlib.Path, model: Model, trust_pickle: bool = False,
                        namespace: str = "checkpoint") -> dict[str, dict]:
    """{"text_encoder": state (, "text_encoder_2": state)} in the base encoders' key names, from a text-encoder
    folder, a pipeline folder (its text_encoder/ and, for SDXL, text_encoder_2/) or a state-dict file."""
    import torch

    if path.is_dir():
        folders = {"text_encoder": path} if (path / "config.json").exists() else \
            {k: path / k for k in ("text_encoder", "text_encoder_2")
             if getattr(model, k, None) is not None and (path / k / "config.json").exists()}
        return {k: type(getattr(model, k)).from_pretrained(folder, torch_dtype=torch.float32).state_dict()
                for k, folder in folders.items()}
    state = _read_state(path, f"{namespace}.text_encoder", trust_pickle, namespace, ENCODER_FORMATS)
    if any(k.startswith(ENCODER_PREFIX) for k in state):
        state = {k[len(ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    # transformers 4 named the weights text_model.*, transformers 5 without it: the base encoder's names
    base = model.text_encoder.state_dict()
    bare = {k.removeprefix("text_model."): v for k, v in state.items()  # position_ids: a buffer older files kept
            if isinstance(v, torch.Tensor) and not k.endswith("embeddings.position_ids")}
    named = {k: bare.pop(k.removeprefix("text_model.")) for k in base if k.removeprefix("text_model.") in bare}
    return {"text_encoder": {**named, **bare}}


def check_fits(state: dict, base: dict, path: str, part: str = "UNet") -> None:
    """One-line error when the checkpoint's tensors do not match the base ``part``'s names and shapes."""
    missing = [k for k in base if k not in state]
    unexpected = [k for k in state if k not in base]
    shapes = [k for k in base if k in state and tuple(state[k].shape) != tuple(base[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing ({_first(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({_first(unexpected)})" if unexpected else "",
                 f"{len(shapes)} of another shape ({', '.join(f'{k} {tuple(state[k].shape)} vs {tuple(base[k].shape)}' for k in shapes[:2])})"
                 if shapes else ""]
        raise UserError(f"checkpoint {path} does not fit the base model's {part} ({len(base)} tensors): "
                        f"{'; '.join(p for p in parts if p)}; is it a {part} of this --model's architecture?")


def _first(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] + ("..." if len(text) > 200 else "")
