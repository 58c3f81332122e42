"""Model plugins: one loader for every Stable Diffusion model, SD-1.x, SD-2.x and SDXL, the toy one included.

Never downloads: a hub id is looked up in the local Hugging Face cache only, and a missing copy
is an error that says where we looked and how to provide the weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from dataclasses import dataclass

from relearnbench.api import Model
from relearnbench.errors import UserError
from relearnbench.toy import TOY_DIR



@dataclass(frozen=True)
class ModelConfig:
    path: str = ""  # a local diffusers folder; overrides the hub id of sd14 / sd15 / sd21 / sdxl
    revision: str = ""  # hub cache revision to use ("" = whatever the cache's main points at)
    # the random-weight models only (sd14-random, sd2-random, sdxl-random): image side in pixels, a multiple of 64
    # (0 = the architecture's own: 512, 768, 1024). The weights do not depend on it; sd14-random's CPU test runs
    # the whole paper-sd14 grid at 64 (a 512 UNet call takes ~20 s on 2 cores)
    resolution: int = 0


def load_model(name: str, config: ModelConfig, device="cpu", dtype=None) -> Model:
    """``name`` is a MODELS registry name or a path to a diffusers SD-1.x folder."""
    from relearnbench.registry import MODELS

    if name not in MODELS and pathlib.Path(name).is_dir():
        return load_folder(name, pathlib.Path(name), preset=folder_preset(pathlib.Path(name)), device=device,
                           dtype=dtype)
    loader = MODELS.get(name)
    meta = MODELS.meta(name)
    model = loader(name, config, meta, device=device, dtype=dtype)
    if config.resolution and model.resolution != config.resolution:
        raise UserError(f"model.resolution={config.resolution}: model {name} draws at {model.resolution} px only "
                        "(sd14-random, sd2-random and sdxl-random take model.resolution)")
    return model


def load_toy(name, config: ModelConfig, meta: dict, device="cpu", dtype=None) -> Model:
    folder = pathlib.Path(config.path) if config.path else TOY_DIR / "model"
    if not (folder / "model_index.json").exists():
        raise UserError(f"toy model not found at {folder}; rebuild it with `relearnbench toy build`")
    return load_folder(name, folder, preset=meta.get("preset", "toy"), device=device, dtype=dtype)


def load_sd(name, config: ModelConfig, meta: dict, device="cpu", dtype=None) -> Model:
    if config.path:
        folder = pathlib.Path(config.path)
        if not (folder / "model_index.json").exists():
            raise UserError(f"model.path={folder} is not a diffusers folder (no model_index.json)")
    else:
        folder = _hub_cache(meta["hub_id"], config.revision)
    return load_folder(name, folder, preset=meta.get("preset", "sd14"), device=device, dtype=dtype)


def _loader(name: str) -> str | None:
    """The name of the function that loads registered model ``name`` (None for a folder), without importing it."""
    from relearnbench.registry import MODELS

    if name not in MODELS:
        return None
    target = MODELS.entry(name).target
    return getattr(target, "__name__", str(target).rpartition(":")[2])


def model_world(name: str) -> str | None:
    """What a model draws: "toy" (the toy world's shapes), "sd" (real Stable Diffusion images), or None
    (random weights, or a third party's loader: any concept goes)."""
    loader = _loader(name)
    return "toy" if loader == "load_toy" else "sd" if loader in (None, "load_sd") else None


# what load_folder reads: (file, or alternatives of which one must exist; transformers 5 saves a tokenizer as
# tokenizer.json alone)
FOLDER_FILES = ("model_index.json", "unet/config.json",
                ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin"),
                "vae/config.json", ("vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.bin"),
                "text_encoder/config.json", ("text_encoder/model.safetensors", "text_encoder/pytorch_model.bin"),
                ("tokenizer/vocab.json", "tokenizer/tokenizer.json"), ("tokenizer/merges.txt", "tokenizer/tokenizer.json"),
                "scheduler/scheduler_config.json")
# and an SDXL folder's second text encoder
SDXL_FILES = ("text_encoder_2/config.json", ("text_encoder_2/model.safetensors", "text_encoder_2/pytorch_model.bin"),
              ("tokenizer_2/vocab.json", "tokenizer_2/tokenizer.json"),
              ("tokenizer_2/merges.txt", "tokenizer_2/tokenizer.json"))


def missing_files(name: str, config: ModelConfig) -> list[str]:
    """Why model ``name`` cannot load, one line per missing file (the preflight); [] when it can, or when
    its loader reads no folder (``tiny``, ``sd14-random``, a third party's)."""
    from relearnbench.registry import MODELS

    loader = _loader(name)
    if loader is None:
        folder, how = pathlib.Path(name), f"--model {name}"
    elif loader == "load_toy":
        folder, how = (pathlib.Path(config.path) if config.path else TOY_DIR / "model"), "rebuild with `relearnbench toy build`"
    elif loader == "load_sd" and config.path:
        folder, how = pathlib.Path(config.path), f"--set model.path={config.path}"
    elif loader == "load_sd":
        try:
            folder, how = _hub_cache(MODELS.meta(name)["hub_id"], config.revision), "the Hugging Face cache"
        except UserError as e:
            return [str(e)]
    else:
        return []
    xl = (folder / "model_index.json").exists() and folder_architecture(folder) == "sdxl"
    missing = [f if isinstance(f, str) else " or ".join(f) for f in FOLDER_FILES + (SDXL_FILES if xl else ())
               if not any((folder / g).exists() for g in ((f,) if isinstance(f, str) else f))]
    if len(missing) == len(FOLDER_FILES):
        return [f"model {name}: {folder} is not a diffusers Stable Diffusion folder ({how}): "
                "it has none of model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/"]
    return [f"model {name}: {folder / f} is missing ({how})" for f in missing]


def _hub_cache(hub_id: str, revision: str) -> pathlib.Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        return pathlib.Path(snapshot_download(hub_id, revision=revision or None, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError and friends: nothing in the cache
        raise UserError(
            f"no local copy of {hub_id}: looked in the Hugging Face cache {HF_HUB_CACHE} ({type(e).__name__}); "
            f"download it once where there is internet (`hf download {hub_id} --exclude \"*.ckpt\"`; it lands in "
            f"that cache) or "
            f"pass a diffusers folder with --set model.path=DIR") from e


def folder_architecture(folder: pathlib.Path) -> str:
    """What a diffusers folder holds, from its model_index.json and configs: "sdxl" (two text encoders),
    "sd21" (v-prediction, or a 1024-wide text encoder: SD-2.x), else "sd14" (SD-1.x)."""
    index = json.loads((folder / "model_index.json").read_text())
    if "text_encoder_2" in index or "XL" in index.get("_class_name", ""):
        return "sdxl"
    sched, text = folder / "scheduler" / "scheduler_config.json", folder / "text_encoder" / "config.json"
    if sched.exists() and json.loads(sched.read_text()).get("prediction_type") == "v_prediction":
        return "sd21"
    return "sd21" if text.exists() and json.loads(text.read_text()).get("hidden_size") == 1024 else "sd14"


def folder_preset(folder: pathlib.Path) -> str:
    """The presets a diffusers folder runs at: its architecture's, "sd14" when it has no model_index.json (the
    preflight then says what is missing)."""
    return folder_architecture(folder) if (folder / "model_index.json").exists() else "sd14"


def load_folder(name: str, folder: pathlib.Path, *, preset: str, device="cpu", dtype=None) -> Model:
    """A diffusers folder of SD-1.x, SD-2.x or SDXL (two text encoders when model_index.json names text_encoder_2)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from relearnbench.progress import no_transformers_bars

    dtype = dtype or torch.float32
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype)
    second = {}
    with no_transformers_bars():
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", torch_dtype=dtype)
        if folder_architecture(folder) == "sdxl":
            second = dict(text_encoder_2=CLIPTextModelWithProjection.from_pretrained(
                folder, subfolder="text_encoder_2", torch_dtype=dtype),
                tokenizer_2=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2"))
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    return _assemble(name, unet, text_encoder, tokenizer, vae, scheduler, preset,
                     _folder_fingerprint(folder), device, dtype, **second)


# The published configs of each random-weight architecture (the hub repositories' config.json files, diffusers'
# defaults for the keys left out): SD-1.4 CompVis/stable-diffusion-v1-4, SD-2.1 stabilityai/stable-diffusion-2-1,
# SDXL stabilityai/stable-diffusion-xl-base-1.0. ``unet`` takes sample_size = resolution / 8 besides.
_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
_CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
               max_position_embeddings=77, hidden_act="quick_gelu")
_SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 clip_sample=False)
ARCHITECTURES = {
    "sd14": dict(resolution=512, vae=_VAE, text_encoder=_CLIP_L, scheduler=_SCHEDULE,
                 unet=dict(cross_attention_dim=768, attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280),
                           layers_per_block=2)),
    "sd21": dict(resolution=768, vae=_VAE, scheduler={**_SCHEDULE, "prediction_type": "v_prediction", "steps_offset": 1},
                 text_encoder=dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                                   num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                                   projection_dim=512),
                 unet=dict(cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
                           upcast_attention=True, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)),
    "sdxl": dict(resolution=1024, vae={**_VAE, "scaling_factor": 0.13025, "force_upcast": True},
                 scheduler={**_SCHEDULE, "steps_offset": 1}, text_encoder={**_CLIP_L, "projection_dim": 768},
                 text_encoder_2=dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                     num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu",
                                     projection_dim=1280),
                 unet=dict(cross_attention_dim=2048, attention_head_dim=(5, 10, 20), block_out_channels=(320, 640, 1280),
                           layers_per_block=2, transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
                           down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                           up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                           addition_embed_type="text_time", addition_embed_type_num_heads=64,
                           addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)),
}


def load_sd_random(name, config: ModelConfig, meta: dict, device="cpu", dtype=None) -> Model:
    """A published architecture (``meta["architecture"]``: sd14, sd21 or sdxl, see ARCHITECTURES) with random
    weights (seed 0): speed and memory only. Under ``torch.device("meta")`` it allocates nothing."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    arch_name = meta.get("architecture", "sd14")
    arch = ARCHITECTURES[arch_name]
    dtype = dtype or torch.float32
    resolution = config.resolution or arch["resolution"]
    if resolution % 64:  # the VAE halves the side 3 times, then the UNet 3 times
        raise UserError(f"model.resolution={resolution}: {name} needs a multiple of 64")
    torch.manual_seed(0)  # sample_size is no parameter: the same weights at every resolution
    unet = UNet2DConditionModel(sample_size=resolution // 8, **arch["unet"])
    vae = AutoencoderKL(sample_size=resolution, **arch["vae"]).to(dtype)
    text_encoder = CLIPTextModel(CLIPTextConfig(**arch["text_encoder"])).to(dtype)
    second = {}
    if "text_encoder_2" in arch:
        second = dict(text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**arch["text_encoder_2"])).to(dtype),
                      tokenizer_2=CLIPTokenizer.from_pretrained(TOY_DIR / "model" / "tokenizer", pad_token="!"))
    tokenizer = CLIPTokenizer.from_pretrained(TOY_DIR / "model" / "tokenizer")  # SD-1's BPE tokenizer, CLIP's vocabulary
    scheduler = DDPMScheduler(**arch["scheduler"])
    default = ARCHITECTURES[arch_name]["resolution"]
    return _assemble(name, unet, text_encoder, tokenizer, vae, scheduler, meta.get("preset", arch_name),
                     f"{arch_name}-random-seed0" + (f"-{resolution}px" if resolution != default else ""), device, dtype,
                     **second)


def _assemble(name, unet, text_encoder, tokenizer, vae, scheduler, preset, fingerprint, device, dtype,
              text_encoder_2=None, tokenizer_2=None) -> Model:
    frozen = [m for m in (vae, text_encoder, text_encoder_2) if m is not None]
    for module in (unet, *frozen):
        module.requires_grad_(False)
        module.eval()
    unet.to(device)  # trainable weights stay float32
    for module in frozen:
        module.to(device)
        if module.dtype != dtype:
            module.to(dtype)
    resolution = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    return Model(name=name, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae,
                 scheduler=scheduler, resolution=resolution, preset=preset, fingerprint=fingerprint,
                 device=device, dtype=dtype, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)


def _folder_fingerprint(folder: pathlib.Path) -> str:
    """Hash of the configs and of each weight file's name and size (hashing GBs of SD weights at
    every start would cost minutes; the toy's files are small enough to hash in full)."""
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            rel = str(f.relative_to(folder)).encode()
            small = f.stat().st_size < 32 * 2**20
            h.update(rel + (f.read_bytes() if small else str(f.stat().st_size).encode()))
    return h.hexdigest()[:16]


ENCODERS = ("text_encoder", "text_encoder_2")  # the text encoders a method may train (AdvUnlearn), SDXL's second too


def copy_model(model: Model, unet_state: dict | None = None, encoder_states: dict | None = None) -> Model:
    """A copy whose UNet and text encoders (which AdvUnlearn trains and concept inversion edits) can be changed
    freely. ``unet_state`` / ``encoder_states`` (``{"text_encoder": state, ...}``, ``ENCODERS``): an unlearned
    model's saved weights, which the copy takes as they are (dtype included)."""
    import copy

    states = encoder_states or {}
    encoders = {k: _copy(getattr(model, k), states.get(k)) for k in ENCODERS}
    return dataclasses.replace(model, unet=_copy(model.unet, unet_state), tokenizer=copy.deepcopy(model.tokenizer),
                               tokenizer_2=copy.deepcopy(model.tokenizer_2), **encoders)


def _copy(module, state: dict | None):
    """A copy of ``module``; with ``state``, one whose weights are the state's own tensors: its parameters are copied
    as empty meta tensors first, so no third copy (original, copy, state) is held even for a moment."""
    import copy

    if state is None:
        return copy.deepcopy(module)
    import torch

    empty = {id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
             for p in module.parameters()}
    out = copy.deepcopy(module, empty)
    _assign(out, state)
    return out


def _assign(module, state: dict) -> None:
    """``module`` takes ``state``'s tensors as its weights (dtype included)."""
    for k in list(state):  # each tensor into fresh memory, one at a time: a file's tensors may sit at
        state[k] = state[k].clone()  # offsets that change the order of vectorised sums in the last bits
    module.load_state_dict(state, assign=True)


def changed_encoders(model: Model, base: Model) -> dict[str, dict]:
    """The state dicts of ``model``'s text encoders that differ from ``base``'s in a value, a dtype or a shape: what
    an unlearned model carries beside its UNet (``{}`` for a method that changes the UNet alone)."""
    import torch

    out = {}
    for k in ENCODERS:
        mine, theirs = getattr(model, k), getattr(base, k)
        if mine is None or mine is theirs:
            continue
        a, b = mine.state_dict(), theirs.state_dict()
        if a.keys() != b.keys() or any(x.dtype != b[n].dtype or x.shape != b[n].shape or not torch.equal(x, b[n])
                                       for n, x in a.items()):
            out[k] = a
    return out


def model_info(model: Model) -> str:
    return json.dumps({"name": model.name, "fingerprint": model.fingerprint, "preset": model.preset})


def add_adapter(unet, name: str, lora_config) -> list:
    """A peft LoRA adapter ``name`` on ``unet`` (diffusers' ``add_adapter``): its (name, parameter) pairs."""
    unet.add_adapter(lora_config, adapter_name=name)
    return [(n, p) for n, p in unet.named_parameters() if f".{name}." in n]


def remove_adapter(unet, name: str) -> None:
    """Adapter ``name`` goes: deleted where another adapter stays, else peft's layers are unloaded, so the plain
    layers and the state dict's original keys come back (fuse it first to keep what it learned)."""
    if set(unet.peft_config) - {name}:
        unet.delete_adapters(name)
    else:
        unet.unload_lora()


def trainable(unet, train: str) -> list:
    """ESD's parameter sets. ``u``: everything but cross-attention, and (as the reference code) but
    the time embedding, SDXL's added embedding of the pooled text and time ids (esd_sdxl.py leaves out every
    "emb" module) and the output conv; ``x``: cross-attention (``attn2``) only; ``f``: all."""
    out = []
    for name, p in unet.named_parameters():
        xattn = ".attn2." in name
        if (train == "f" or (train == "x" and xattn)
                or (train == "u" and not xattn
                    and not name.startswith(("time_embedding.", "add_embedding.", "conv_out.")))):
            out.append((name, p))
    if not out:
        raise UserError(f"train={train!r} selects no UNet parameter (expected u, x or f)")
    return out
