"""Memory: what each stage of a cell held at its peak (``measure``, recorded with every record), and what a
cell's recipe needs at least (``floor``: the memory model that ``relearnbench run --dry-run``, the preflight,
``benchmarks/memory.py`` and docs/gpu-memory.md read).

Measured: on CUDA ``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` since the stage began; on the
CPU the process's resident high-water mark (``VmHWM``) since the stage began, reset through
``/proc/self/clear_refs`` (Linux), so a worker's earlier stages do not hide a later, smaller one. Where that
reset is refused (another OS, a locked-down container) the figure is the process's peak so far (``ru_maxrss``),
an upper bound of the stage's.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import pathlib
import sys
import time
from dataclasses import dataclass
from typing import Literal

MIB = 2 ** 20


@dataclass(frozen=True)
class UnlearnConfig:
    """``--set unlearn.KEY=VALUE``: how the harness holds the UNet a method trains (``checkpointing`` keeps the
    numbers; ``optimizer_state`` changes them and enters the unlearned model's key when set)."""

    # recompute the trained UNet's activations in backward (diffusers' gradient checkpointing): about a quarter
    # of the activation memory for ~30 % more time; off by default (the CPU has the memory, not the time)
    checkpointing: bool = False
    # the AdamW state (both moments) of the trained UNet weights, meta's simulated finetune included: float32 as
    # torch keeps it (8 bytes a trained weight); bfloat16 (4; ours: a saving that changes the numbers in the last
    # bits of each moment); 8bit, bitsandbytes' AdamW8bit (2; ours: CUDA only). Enters the unlearned model's key
    # only when set
    optimizer_state: Literal["float32", "bfloat16", "8bit"] = "float32"


UnlearnConfig.config_name = "unlearn"
_OPEN: list[dict] = []  # the stages being measured in this process, outermost first
STATE_BYTES = {"float32": 8, "bfloat16": 4, "8bit": 2}  # AdamW's two moments, bytes per trained weight


def optimizer_with_state(opt, state: str, device="cpu", free_grads: bool = False):
    """``opt`` (a torch AdamW a method built) with its moments kept as ``state`` says (``unlearn.optimizer_state``):
    ``opt`` itself for float32, else a new optimizer over the same parameter groups and settings. ``free_grads``
    (bfloat16 moments): each gradient is dropped as its parameter steps (meta's simulated finetune)."""
    import torch

    if state == "float32":
        return opt
    if type(opt) is not torch.optim.AdamW:
        from relearnbench.errors import UserError

        raise UserError(f"unlearn.optimizer_state={state}: keeps AdamW's moments only, and this method builds "
                        f"{type(opt).__name__}; drop the setting (--set unlearn.optimizer_state=float32)")
    groups = [{k: v for k, v in g.items() if k in ("params", "lr", "betas", "eps", "weight_decay")}
              for g in opt.param_groups]
    if state == "bfloat16":
        out = adamw_bf16()(groups)
        out.free_grads = free_grads
        return out
    return _adamw8bit(groups, device)


def _adamw8bit(groups: list, device):
    from relearnbench.errors import UserError

    if not str(device).startswith("cuda"):
        raise UserError(f"unlearn.optimizer_state=8bit: bitsandbytes' AdamW8bit runs on CUDA and this run's device "
                        f"is {device}; on the CPU use --set unlearn.optimizer_state=bfloat16")
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        raise UserError("unlearn.optimizer_state=8bit needs bitsandbytes (pip install bitsandbytes), or use "
                        "--set unlearn.optimizer_state=bfloat16") from e
    return bnb.optim.AdamW8bit(groups)


@functools.cache
def adamw_bf16():
    """torch.optim.AdamW with bfloat16 moments (the class is made on first use: importing this module imports no
    torch)."""
    import torch

    class AdamWBF16(torch.optim.AdamW):
        """AdamW whose two moments are stored in bfloat16: half torch's float32 state for float32 weights. Each
        step widens one parameter's moments to float32, runs torch's own single-tensor AdamW update on them
        (``torch.optim.adamw.adamw``) and rounds them back, so the update is torch's and only the stored moments
        lose precision (bfloat16 has float32's range: the small second moments do not underflow). No installed
        library keeps float32 weights with bfloat16 moments (torch's keep the parameter's dtype; bitsandbytes'
        8-bit one runs on CUDA only). ``free_grads``: drop each gradient once its parameter has stepped (meta's
        simulated finetune: its first step's moments then take the memory its gradients leave)."""

        free_grads = False

        @torch.no_grad()
        def step(self, closure=None):
            from torch.optim.adamw import adamw

            loss = None if closure is None else closure()
            for group in self.param_groups:
                beta1, beta2 = group["betas"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if not state:
                        state["step"] = torch.tensor(0.0)
                        state["exp_avg"] = torch.zeros_like(p, dtype=torch.bfloat16)
                        state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.bfloat16)
                    m, v = state["exp_avg"].float(), state["exp_avg_sq"].float()
                    adamw([p], [p.grad], [m], [v], [], [state["step"]], foreach=False, amsgrad=False, beta1=beta1,
                          beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
                          maximize=False)
                    state["exp_avg"].copy_(m)
                    state["exp_avg_sq"].copy_(v)
                    if self.free_grads:
                        p.grad = None
            return loss

    return AdamWBF16


@contextlib.contextmanager
def measure(device):
    """Wall seconds, peak MiB (``peak_mb``: allocated on CUDA, resident on the CPU) and on CUDA the peak the
    caching allocator reserved (``reserved_mb``; 0 on the CPU) of the stage run inside the block.

    A stage measured inside another (an evaluation inside an attack) has its own figure, and the outer stage's
    counts what the outer stage held before and after it, not the inner stage's transient peak."""
    out = {"seconds": 0.0, "peak_mb": 0.0, "reserved_mb": 0.0}
    cuda = str(device).startswith("cuda")
    for outer in _OPEN:  # what the enclosing stages reached so far, before the reset below forgets it
        _fold(outer, _read(outer["cuda"], outer["device"]))
    entry = {"cuda": cuda, "device": device, "peak": (0.0, 0.0)}
    _reset(cuda, device)
    _OPEN.append(entry)
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - t0
        _OPEN.remove(entry)
        _fold(entry, _read(cuda, device))
        out["peak_mb"], out["reserved_mb"] = entry["peak"]
        if _OPEN:  # the enclosing stage goes on measuring from what is resident now
            _reset(cuda, device)


def reset_peak(device="cpu") -> bool:
    """Start the peak over from what is allocated (resident) now; False where the CPU figure cannot be reset."""
    return _reset(str(device).startswith("cuda"), device)


def _fold(entry: dict, reading: tuple[float, float]) -> None:
    entry["peak"] = tuple(max(a, b) for a, b in zip(entry["peak"], reading))


def release_freed(collect: bool = True) -> None:
    """Hand the C heap's free pages back to the OS (glibc's ``malloc_trim``), so that what is resident is what the
    process holds. Most of a UNet's tensors are smaller than glibc's mmap threshold and live on its heap, where freed
    memory stays resident until trimmed: without this a stage's peak counted what the stage before it had freed (an
    evaluation after an unlearning read 14.2 GiB on sd14-random, 4 GiB of it the unlearning's). ``collect``: collect
    the garbage first, where the harness drops a model (0.26 s with torch and diffusers imported: every stage start
    trims alone, which read the same evaluation peaks on sd14-random). Where the C library is not glibc (macOS, musl)
    there is nothing to trim."""
    import gc

    if collect:
        gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc():
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def _reset(cuda: bool, device) -> bool:
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats(device)
        return True
    release_freed(collect=False)
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size to the current
        return True
    except OSError:
        return False


def _read(cuda: bool, device) -> tuple[float, float]:
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated(device) / MIB, torch.cuda.max_memory_reserved(device) / MIB
    return peak_rss_mb(), 0.0


def peak_rss_mb() -> float:
    """This process's resident high-water mark in MiB (since the last reset where Linux allows one)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


# -- the memory model: what a cell's recipe needs at least ------------------------------------------------
GB = 2 ** 30
# methods whose prepare() keeps a frozen copy of the original UNet as a teacher, in the run's dtype (esd.py, sdd.py)
TEACHER = {"esd", "sdd"}


def meta_model(name: str, config=None, dtype=None):
    """Model ``name`` with every weight on torch's ``meta`` device: the real architecture, its parameter counts,
    nothing allocated. A Stable Diffusion model (sd14, sd15, sd21, sdxl, their -random twins, a diffusers folder)
    is built from its architecture's published configs (``relearnbench.models.ARCHITECTURES``, the random
    loaders'), ``toy`` and ``tiny`` as they load."""
    import dataclasses

    import torch

    from relearnbench.models import ModelConfig, load_model, load_sd_random

    config = config or ModelConfig()
    arch = architecture(name, config)
    if arch is not None:  # built on meta from the architecture's configs
        from diffusers.utils import logging as diffusers_logging

        level = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # not its note on casting the VAE: nothing is cast on meta
        try:
            with torch.device("meta"):
                return load_sd_random(name, dataclasses.replace(config, path=""),
                                      {"preset": arch, "architecture": arch}, device="meta", dtype=dtype)
        finally:
            diffusers_logging.set_verbosity(level)
    model = load_model(name, config, device="cpu", dtype=dtype)  # toy, tiny, a plugin's: loaded, then moved
    for module in (model.unet, model.text_encoder, model.text_encoder_2, model.vae):
        if module is not None:
            module.to("meta")
    return model


def architecture(name: str, config) -> str | None:
    """Which published architecture model ``name`` has (sd14, sd21, sdxl: a key of ``models.ARCHITECTURES``),
    None for a model that is no Stable Diffusion release (toy, tiny, a third party's loader)."""
    import pathlib

    from relearnbench.models import _loader, folder_architecture, folder_preset
    from relearnbench.registry import MODELS

    loader = _loader(name)
    if loader is None:  # a diffusers folder given as the model
        return folder_preset(pathlib.Path(name))
    if loader == "load_sd_random":
        return MODELS.meta(name).get("architecture", "sd14")
    if loader == "load_sd":
        folder = pathlib.Path(config.path) if config.path else None
        if folder is not None and (folder / "model_index.json").exists():
            return folder_architecture(folder)
        return MODELS.meta(name).get("preset", "sd14")
    return None


class LiveBytes:
    """The most bytes of tensors alive at once while the block runs (on the ``meta`` device: counted, never
    allocated): activations, the tensors autograd saves for backward, and the gradients of a backward pass.
    A tensor counts from the op that makes it to its release; views count nothing of their own."""

    def __init__(self):
        self.live = self.peak = 0

    def __enter__(self):
        import weakref

        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                if any(r.alias_info is not None for r in func._schema.returns):
                    return out  # a view or an in-place op: no new memory
                for t in tree_flatten(out)[0]:
                    if hasattr(t, "untyped_storage") and t.numel():
                        n = t.numel() * t.element_size()
                        counter.live += n
                        counter.peak = max(counter.peak, counter.live)
                        weakref.finalize(t, counter._free, n)
                return out

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def _free(self, n: int) -> None:
        self.live -= n

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)


def _fused_attention():
    """``scaled_dot_product_attention`` as the fused kernels hold it (CUDA's flash and memory-efficient ones, the
    CPU's flash one): its output and a float32 log-sum-exp per query saved for backward, never the L×S attention
    matrix that the meta device's decomposition into matmul and softmax would materialise."""
    import torch

    class Fused(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v):
            out = q.new_empty(*q.shape[:-1], v.shape[-1])
            lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
            ctx.save_for_backward(q, k, v, out, lse)
            return out

        @staticmethod
        def backward(ctx, grad):
            q, k, v, _, _ = ctx.saved_tensors
            return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    def sdpa(q, k, v, *args, **kwargs):
        return Fused.apply(q, k, v)
    return sdpa


def unet_activations(model, batch: int, train: bool = True, resolution: int | None = None) -> int:
    """Bytes of activations of one UNet call at ``batch`` latents of the model's resolution, counted on the
    ``meta`` device in the UNet's dtype with fused attention (``_fused_attention``). ``train``: what the forward
    pass leaves for backward (the saved tensors; the weights' gradients are counted apart, and backward's
    transient buffers, one layer's worth, are not); else the most alive at once during the forward pass."""
    import torch

    unet = model.unet
    side = (resolution or model.resolution) // 8
    dtype = next(unet.parameters()).dtype
    weights = {p: p.requires_grad for p in unet.parameters()}
    import torch.nn.functional as F

    sdpa = F.scaled_dot_product_attention
    try:
        unet.requires_grad_(train)
        F.scaled_dot_product_attention = _fused_attention()  # diffusers' attention calls it through F
        with LiveBytes() as live:
            x = torch.zeros(batch, unet.config.in_channels, side, side, device="meta", dtype=dtype)
            c = torch.zeros(batch, 77, unet.config.cross_attention_dim, device="meta", dtype=dtype)
            t = torch.zeros(batch, device="meta", dtype=torch.long)
            added = None
            if unet.config.addition_embed_type == "text_time":  # SDXL: the pooled text and the 6 time ids
                pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
                added = {"text_embeds": torch.zeros(batch, pooled, device="meta", dtype=dtype),
                         "time_ids": torch.zeros(batch, 6, device="meta", dtype=dtype)}
            with torch.set_grad_enabled(train):
                out = unet(x, t, encoder_hidden_states=c, added_cond_kwargs=added).sample
            held = live.live  # training: what autograd saved for backward, and the output
            del out
        return held if train else live.peak
    finally:
        F.scaled_dot_product_attention = sdpa
        for p, g in weights.items():
            p.requires_grad_(g)


def vae_decode_activations(model, batch: int) -> int:
    """Peak bytes alive while the VAE decodes ``batch`` latents to images (no gradient), on the ``meta`` device."""
    import torch

    side = model.resolution // 8
    vae = model.vae
    with torch.no_grad(), LiveBytes() as live:
        z = torch.zeros(batch, vae.config.latent_channels, side, side, device="meta", dtype=vae.dtype)
        x = vae.decode(z).sample
        del x, z
    return live.peak


def _bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) if module is not None else 0


def _text_bytes(model) -> int:
    """The text encoders' weights (SDXL has two), as ``meta_model`` built them (float32)."""
    return _bytes(model.text_encoder) + _bytes(model.text_encoder_2)


def _trained(method, shape: "Shape") -> int:
    """Parameters a loss-based method trains: its ESD-style ``train`` set (u, x, f), else every UNet weight."""
    train = getattr(method.config, "train", None)
    if train in ("u", "x", "f"):
        return shape.trained(train)
    return shape.unet_params


# -- what the memory model reads of a model, kept between runs ------------------------------------------------
# The figures of an architecture (parameter counts, activation bytes per batch and resolution) take seconds to count
# on the meta device (SDXL's at 1024 px ~10 s, with diffusers' import): they are counted once and kept, under a key of
# the architecture, its resolution, torch's, diffusers' and transformers' versions and the counting code below
# (_COUNTING), in the shipped table (SHAPES_FILE: the shipped grids' models, written by benchmarks/memory_shapes.py)
# and in the harness's cache (shapes_cache(): the rest, as they are first counted). A figure not kept under the
# current key is counted now, the same way: a changed library or counting code never reads a stale one.
SHAPES_FILE = pathlib.Path(__file__).with_name("memory_shapes.json")
_COUNTING = ("LiveBytes", "_fused_attention", "unet_activations", "vae_decode_activations", "_bytes", "_text_bytes")


def shapes_cache() -> pathlib.Path:
    """The kept figures counted here: memory-shapes.json in the harness's cache (``artifacts.cache_root``)."""
    from relearnbench.artifacts import cache_root

    return cache_root() / "memory-shapes.json"


@functools.cache
def environment() -> dict:
    """What the kept figures depend on besides the architecture: the libraries' versions (read from their metadata,
    nothing imported) and a hash of the counting code (this module's ``_COUNTING`` and ``models.trainable``)."""
    import importlib.metadata as md
    import inspect

    from relearnbench.models import trainable

    code = hashlib.sha256()
    for f in [globals()[n] for n in _COUNTING] + [trainable]:
        code.update(inspect.getsource(f).encode())
    versions = {}
    for lib in ("torch", "diffusers", "transformers"):
        try:
            versions[lib] = md.version(lib)
        except md.PackageNotFoundError:
            versions[lib] = None
    return {"versions": versions, "code": code.hexdigest()[:16]}


def shape_key(name: str, config) -> tuple[str | None, str | None]:
    """(key, label) under which model ``name``'s figures are kept: a Stable Diffusion architecture (meta_model builds
    it from ``models.ARCHITECTURES``) by its configs and resolution, the toy model by its folder's fingerprint (its
    files' contents), with ``environment()``; (None, None) for a model known only by loading it (tiny, a plugin's)."""
    from relearnbench.models import ARCHITECTURES, _folder_fingerprint, _loader
    from relearnbench.toy import TOY_DIR

    arch = architecture(name, config)
    if arch is not None:
        resolution = config.resolution or ARCHITECTURES[arch]["resolution"]
        ident, label = {"architecture": ARCHITECTURES[arch], "resolution": resolution}, f"{arch} at {resolution} px"
    elif _loader(name) == "load_toy":
        fingerprint = _folder_fingerprint(pathlib.Path(config.path) if config.path else TOY_DIR / "model")
        ident, label = {"folder": fingerprint, "resolution": config.resolution}, f"toy folder {fingerprint}"
    else:
        return None, None
    blob = json.dumps({**ident, **environment()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20], label


_KEPT: dict | None = None  # key -> figures: the shipped table's and the cache's, read once per process


def kept() -> dict[str, dict]:
    global _KEPT
    if _KEPT is None:
        _KEPT = {}
        for path in (SHAPES_FILE, shapes_cache()):
            try:
                shapes = json.loads(path.read_text())["shapes"]
            except (OSError, ValueError, KeyError):  # none yet, or unreadable: counted again
                continue
            for key, entry in shapes.items():
                _KEPT.setdefault(key, {}).update(entry["values"])
    return _KEPT


class Shape:
    """What the memory model reads of model ``name`` (``floors``, ``harness_extra``): parameter counts, bytes of the
    frozen modules, the parameters an ESD-style ``train`` set selects, activation bytes per UNet batch and the VAE's.
    Each is counted on ``meta_model``'s model when first asked for (the model built then), unless kept (``kept``)."""

    def __init__(self, name: str, config):
        self.name, self.config = name, config
        self.key, self.label = shape_key(name, config)
        self.values = dict(kept().get(self.key, {})) if self.key else {}
        self.counted: dict = {}  # counted in this process, not kept yet
        self.model = None

    def _get(self, what: str, count):
        if what not in self.values:
            if self.model is None:
                self.model = meta_model(self.name, self.config)
            self.values[what] = self.counted[what] = count(self.model)
        return self.values[what]

    @property
    def unet_params(self) -> int:
        return self._get("unet parameters", lambda m: sum(p.numel() for p in m.unet.parameters()))

    @property
    def text_bytes(self) -> int:
        """The text encoders' weights in bytes (float32, as meta_model builds them)."""
        return self._get("text encoder bytes", _text_bytes)

    @property
    def vae_bytes(self) -> int:
        return self._get("vae bytes", lambda m: _bytes(m.vae))

    def trained(self, train: str) -> int:
        """Parameters that ESD's ``train`` set (``models.trainable``: u, x or f) selects."""
        from relearnbench.models import trainable

        return self._get(f"trained {train}", lambda m: sum(p.numel() for _, p in trainable(m.unet, train)))

    @property
    def cross_values(self) -> int:
        """Weights of the cross-attention value projections (``attn2.to_v``; the keys' are as many): what UCE and
        RECE edit."""
        return self._get("cross-attention value weights",
                         lambda m: sum(p.numel() for n, p in m.unet.named_parameters() if n.endswith("attn2.to_v.weight")))

    def activations(self, batch: int, train: bool, resolution: int | None = None) -> int:
        """``unet_activations`` at ``batch`` and ``resolution`` (None: the model's)."""
        side = resolution or self._get("resolution", lambda m: m.resolution)
        return self._get(f"unet activations batch {batch} {'train' if train else 'eval'} at {side} px",
                         lambda m: unet_activations(m, batch, train, side))

    def vae_decode(self, batch: int) -> int:
        """``vae_decode_activations`` at ``batch``, at the model's resolution."""
        return self._get(f"vae decode batch {batch}", lambda m: vae_decode_activations(m, batch))

    def keep(self) -> None:
        """Add the figures counted in this process to the cache (``shapes_cache``), dropping entries of another
        environment; where the cache cannot be written they are counted again next time."""
        if self.key is None or not self.counted:
            return
        path, env = shapes_cache(), environment()
        try:
            shapes = json.loads(path.read_text())["shapes"]
        except (OSError, ValueError, KeyError):
            shapes = {}
        shapes = {k: v for k, v in shapes.items() if v.get("environment") == env}
        shapes.setdefault(self.key, {"model": self.label, "environment": env, "values": {}})["values"].update(
            self.counted)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"about": "relearnbench.memory's figures of each architecture (Shape), "
                                                "counted on the meta device; delete it at will",
                                       "shapes": shapes}, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, path)
        except OSError:
            pass
        self.counted = {}


class Floor:
    """A stage's floor: named parts in bytes (``parts``), their sum (``total``) and how each was counted."""

    def __init__(self):
        self.parts: dict[str, float] = {}

    def add(self, name: str, nbytes: float) -> "Floor":
        if nbytes:
            self.parts[name] = self.parts.get(name, 0) + nbytes
        return self

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def __repr__(self):
        return f"Floor({self.total / GB:.2f} GB: " + ", ".join(f"{k} {v / GB:.2f}" for k, v in self.parts.items()) + ")"


def floors(shape: Shape, method, attack, sample, dtype_bytes: int, checkpointing: bool = False,
           resolution: int | None = None, optimizer_state: str = "float32") -> dict[str, Floor]:
    """The floor of each stage of a cell (``unlearn``, ``attack``, ``eval``): what its recipe holds at its peak.

    ``shape``: the model's figures (``Shape``); ``method`` / ``attack``: the plan's plugin instances (their
    resolved settings); ``sample``: the SampleConfig; ``dtype_bytes``: of the run's ``--dtype`` (the frozen text
    encoder, VAE and teachers; trained UNet weights stay float32). ``optimizer_state`` (``unlearn.optimizer_state``):
    the dtype of the methods' AdamW moments (``STATE_BYTES``; an attack's stay float32). Activations are counted on
    the meta device (``unet_activations``, through the Shape) at the recipe's largest UNet batch with a graph;
    ``checkpointing`` (``unlearn.checkpointing``) keeps about one UNet block's activations instead, counted as 1/4
    (an estimate).
    The original model the harness caches between cells is no part of the recipe: ``harness_extra`` counts it."""
    from relearnbench.api import LossMethod

    n_unet = shape.unet_params
    U = 4 * n_unet  # the UNet's float32 weights
    frozen = (shape.text_bytes + shape.vae_bytes) * dtype_bytes / 4  # meta_model built them in fp32
    state = STATE_BYTES[optimizer_state]
    adam = {"float32": "AdamW state (2 x fp32)", "bfloat16": "AdamW state (2 x bf16)",
            "8bit": "AdamW state (2 x 8 bit)"}[optimizer_state]

    def act(batch: int, train: bool = True, trained_unet: bool = True) -> float:
        """``trained_unet``: a method's (unlearn.checkpointing applies), not an attack's."""
        return shape.activations(batch, train, resolution) * (0.25 if train and trained_unet and checkpointing else 1.0)

    out = {}
    # -- unlearn -----------------------------------------------------------------------------------------
    f = Floor().add("UNet weights (fp32)", U).add("text encoder + VAE", frozen)
    base = getattr(method, "base", None)
    core = base if base is not None else method
    P = n_unet  # the weights that train: a closed-form base's meta trains every one
    if isinstance(core, LossMethod):
        if base is None or getattr(method.config, "train", "base") != "full":
            P = _trained(core, shape)
        f.add("gradients of trained weights", 4 * P).add(adam, state * P)
        if getattr(core, "config_name", "") in TEACHER:
            f.add("frozen teacher UNet", n_unet * dtype_bytes)
        f.add("activations", act(getattr(core.config, "batch_size", 1)))
    if base is None and getattr(core, "config_name", "") == "rece":  # its rounds compare with the original W⁰
        f.add("RECE: original keys and values W⁰ (float64)",
              8 * shape.cross_values * (2 if getattr(core.config, "edit_keys", True) else 1))
    if base is not None:  # X+meta / X+retain (methods/meta.py)
        c = method.config
        if not isinstance(core, LossMethod):  # the closed-form base ran first; every UNet weight trains
            f.add("gradients of trained weights", U).add(adam, state * n_unet)
        group = c.forward_batch or c.batch_size * c.term_batches * 5
        meta_terms = method.meta_terms()
        inner = n_unet if getattr(c, "inner_train", "full") == "full" else P  # what the simulated finetune trains
        if meta_terms and c.order == 1:  # inner_train "base": its untrained weights are θ's, shared
            f.add("meta: finetuned copy θ'", 4 * inner).add("meta: its gradients", 4 * inner)
            if optimizer_state != "bfloat16" or c.inner_steps > 1:  # bfloat16 and one step: its moments are made
                f.add("meta: its " + adam, state * inner)  # as its gradients go, and dropped after (methods/meta.py)
        elif meta_terms:  # order 2: each inner step's weights and gradients stay in the graph
            f.add("meta: inner weights and gradients in the graph (order 2)", 2 * c.inner_steps * 4 * inner)
            f.add("meta: inner activations kept for the second backward", c.inner_steps * act(c.inner_batch))
        f.parts["activations"] = max(f.parts.get("activations", 0), act(group),
                                     act(c.inner_batch) if meta_terms else 0)
    out["unlearn"] = f
    # -- attack --------------------------------------------------------------------------------------------
    a = Floor().add("UNet weights (fp32)", U).add("text encoder + VAE", frozen)
    cfg = getattr(attack, "config", None)
    batch = getattr(cfg, "batch_size", 1)
    name = getattr(attack, "config_name", "")
    from relearnbench.registry import ATTACKS  # the plugins by name: the core imports no plugin module

    if isinstance(attack, ATTACKS.get("lora")):
        a.add("activations", act(batch, trained_unet=False))  # the adapter's own weights and state: a few MB
    elif isinstance(attack, ATTACKS.get("ft")):  # every UNet weight trains
        a.add("gradients of trained weights", U).add("AdamW state (2 x fp32)", 2 * U)
        a.add("activations", act(batch, trained_unet=False))
    elif name in ("unlearndiffatk", "ci"):
        a.add("activations", act(batch, trained_unet=False))  # gradients reach the prompt embeddings, not weights
    out["attack"] = a
    # -- evaluation: sampling with guidance (two UNet branches per image), then decoding -------------------------
    e = Floor().add("UNet weights (fp32)", U).add("text encoder + VAE", frozen)
    e.add("sampling activations", max(act(2 * sample.batch_size, train=False),
                                      shape.vae_decode(sample.batch_size) * dtype_bytes / 4))
    if isinstance(attack, ATTACKS.get("ft")) and len({int(s) for s in cfg.curve if int(s) > 0}) > 1:
        e.add("the attack's AdamW state (a curve point before the last)", 2 * U)  # freed for the last one
    out["eval"] = e
    return out


def harness_extra(shape: Shape, dtype_bytes: int) -> Floor:
    """What the harness holds beside a stage's recipe: the original model, cached between cells (its UNet in
    float32, its text encoder and VAE in the run's dtype), and each cell's own text encoder copy."""
    te = shape.text_bytes * dtype_bytes / 4
    return (Floor().add("cached original UNet (fp32)", 4 * shape.unet_params)
            .add("cached original text encoder + VAE", te + shape.vae_bytes * dtype_bytes / 4)
            .add("the cell's text encoder copy", te))


_SHAPES: dict = {}  # (model, ModelConfig) -> Shape


def cell_floors(p, cell: tuple, resolution: int | None = None, dtype: str | None = None) -> dict[str, Floor]:
    """``floors`` of ``cell`` (model, concept, method, attack, seed) of the plan ``p`` (relearnbench.runner.Plan),
    with its plugins' resolved settings, at the model's resolution (or ``resolution``) and the run's dtype (or
    ``dtype``), plus ``harness``: what the harness holds beside them (``harness_extra``)."""
    from relearnbench.spec import DTYPES

    model_name, _, method, attack, _ = cell
    key = (model_name, p.model_config)
    if key not in _SHAPES:
        _SHAPES[key] = Shape(model_name, p.model_config)
    shape = _SHAPES[key]
    dtype_bytes = 4 if DTYPES.get(dtype or p.spec.dtype, dtype or p.spec.dtype) == "float32" else 2
    out = floors(shape, p.method(method, model_name), p.attack(attack, model_name), p.sample[p.scales[model_name]],
                 dtype_bytes, checkpointing=p.unlearn.checkpointing if p.unlearn else False, resolution=resolution,
                 optimizer_state=p.unlearn.optimizer_state if p.unlearn else "float32")
    out["harness"] = harness_extra(shape, dtype_bytes)
    shape.keep()  # what was counted for it, for the next run
    return out


def cell_peak(f: dict[str, Floor]) -> float:
    """The most a cell holds at once by the memory model: its largest stage's floor, the attack's and the
    evaluation's with the harness's share beside them (``stage_peak``)."""
    return max(stage_peak(f, s) for s in ("unlearn", "attack", "eval"))


def stage_peak(f: dict[str, Floor], stage: str) -> float:
    """A stage's floor and what the harness holds beside it: nothing while a method trains (the harness drops its
    cached original then, ``runner.without_original``; the trained copy's text encoder is the floor's), the cached
    original (``harness_extra``) beside an attack and an evaluation."""
    return f[stage].total + (f["harness"].total if stage != "unlearn" else 0.0)


def free_bytes(device) -> float | None:
    """What ``device`` has free now: CUDA's ``mem_get_info``, the CPU's ``MemAvailable`` (Linux); None if unknown."""
    if str(device).startswith("cuda"):
        import torch

        return float(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        return None


def estimates(p, scales=None) -> dict[tuple, dict[str, Floor]]:
    """``cell_floors`` of every cell of the plan ``p`` (of its models at ``scales`` only, when given); raises
    ``UnknownMemory`` where the model cannot say."""
    try:
        return {cell: cell_floors(p, cell) for cell in p.spec.cells()
                if scales is None or p.scales[cell[0]] in scales}
    except Exception as e:  # a plugin's model or method the memory model does not know: no estimate, no failure
        raise UnknownMemory(f"no memory estimate for this run ({type(e).__name__}: {e})") from e


class UnknownMemory(Exception):
    pass


def estimate_lines(p) -> list[str]:
    """``relearnbench run --dry-run``'s memory section: each cell's estimated peak and its stages' floors."""
    lines = ["memory by the memory model (GB = 2^30 bytes; peak = the largest stage + what the harness holds "
             "beside it, nothing beside the unlearning; docs/gpu-memory.md):"]
    try:
        found = estimates(p)
    except UnknownMemory as e:
        return lines + [f"  {e}"]
    for cell, f in found.items():
        stages = ", ".join(f"{s} {f[s].total / GB:.2f}" for s in ("unlearn", "attack", "eval"))
        lines.append(f"  {'/'.join(map(str, cell))}: ~{cell_peak(f) / GB:.2f} GB ({stages}, harness "
                     f"{f['harness'].total / GB:.2f})")
    return lines


def preflight_warnings(p) -> list[str]:
    """A line per cell whose estimated peak exceeds what the run's device has free now ([] when it fits or the
    free memory is unknown), with the savings to try. Models at the toy presets (toy, tiny: megabytes) are not
    estimated, which keeps their runs' start as fast as it was."""
    free = free_bytes(p.spec.device)
    big = {s for s in p.scales.values() if s != "toy"}
    if free is None or not big:
        return []
    out = []
    try:
        found = estimates(p, big)
    except UnknownMemory:
        return []
    for cell, f in found.items():
        need = cell_peak(f)
        if need > free:
            out.append(f"cell {'/'.join(map(str, cell))} may need ~{need / GB:.1f} GB (the memory model) but "
                       f"{p.spec.device} has {free / GB:.1f} GB free: it may run out of memory; try "
                       "--set unlearn.checkpointing=true, smaller batch sizes (--set PLUGIN.batch_size=N, "
                       "meta.forward_batch=N), the savings that change the numbers (unlearn.optimizer_state="
                       "bfloat16 or 8bit, meta.inner_train=base), or a larger device (docs/gpu-memory.md)")
    return out
