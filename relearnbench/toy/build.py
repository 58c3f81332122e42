"""``relearnbench toy build``: train the toy world's model, judge and CLIP from the recipe, validate
them, and write the assets with a manifest (recipe hash, sha256 of every file, figures, timings).

Deterministic: fixed seeds and two threads; the same recipe on the same
library versions gives the same files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pathlib
import shutil
import time

import numpy as np
import torch

from relearnbench.toy import world
from relearnbench.toy.concepts import ERASABLE

SAMPLER = {"scheduler": "DDIM", "steps": 20, "guidance": 5.0, "eta": 0.0}
RECIPES = {
    "full": dict(seed=0, n_train=16000, n_val=2000, judge_steps=500, vae_steps=500, unet_steps=2000, unet_batch=64,
                 unet_lr=2e-3, clip_steps=800, clip_batch=128, val_per_prompt=16, grid_per_prompt=8),
    "quick": dict(seed=0, n_train=400, n_val=200, judge_steps=30, vae_steps=15, unet_steps=15, unet_batch=16,
                  unet_lr=2e-3, clip_steps=15, clip_batch=32, val_per_prompt=2, grid_per_prompt=2),
}
SOURCES = ("world.py", "tokenizer.py", "judge.py", "clip.py", "tiny_sd.py", "build.py", "concepts.py")


def recipe_hash(recipe: dict) -> str:
    h = hashlib.sha256(json.dumps({"recipe": recipe, "sampler": SAMPLER}, sort_keys=True).encode())
    here = pathlib.Path(__file__).parent
    for name in SOURCES:
        h.update((here / name).read_bytes())
    return h.hexdigest()


def sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _reproducible(threads: int = 2):
    """A fixed thread count for the build only (CPU kernels then reduce in a fixed order); the
    caller's setting comes back. ``torch.use_deterministic_algorithms`` is left off: its CPU
    fallbacks made an autoencoder step ten times slower (2.7 s instead of 0.24 s) and the CPU
    build is reproducible without it (tests/toy checks two quick builds hash the same)."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)


class _Stages:
    """One rich progress bar per stage, and the wall seconds each took."""

    def __init__(self, show: bool):
        self.seconds: dict[str, float] = {}
        self.bar = None
        if show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.bar = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.fields[note]}"))

    @contextlib.contextmanager
    def stage(self, name: str, total: int = 1):
        start = time.perf_counter()
        task = self.bar.add_task(name, total=total, note="") if self.bar else None

        def tick(n: int = 1, **fields):
            if task is not None:
                note = " ".join(f"{k} {v:.4f}" for k, v in fields.items())
                self.bar.update(task, advance=n, note=note)

        yield tick
        if task is not None:
            self.bar.update(task, completed=total)
        self.seconds[name] = round(time.perf_counter() - start, 1)

    def __enter__(self):
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)


def build(out_dir, *, quick: bool = False, progress: bool = True) -> dict:
    """Train and validate everything into ``out_dir`` (model/, judge/, clip/, samples.png,
    manifest.json). Returns the manifest as a dict."""
    from transformers import CLIPTokenizer

    from relearnbench.toy import clip, judge, tiny_sd
    from relearnbench.toy.tokenizer import write_sd_tokenizer

    recipe = RECIPES["quick" if quick else "full"]
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed = recipe["seed"]
    figures: dict = {}
    t0 = time.perf_counter()
    with _reproducible(), _Stages(progress) as st:
        with st.stage("render world") as tick:
            images, labels = world.render_dataset(recipe["n_train"], seed)
            val_images, val_labels = world.render_dataset(recipe["n_val"], seed + 1)
            val_float = val_images.float() / 255

        with st.stage("judge", recipe["judge_steps"]) as tick:
            net = judge.train_judge(images, labels, steps=recipe["judge_steps"], seed=seed, progress=tick)
            judge.save_judge(net, out / "judge")
            figures["judge_accuracy"] = _accuracy(net, val_float, val_labels)

        with st.stage("autoencoder", recipe["vae_steps"]) as tick:
            vae = tiny_sd.train_vae(images, steps=recipe["vae_steps"], seed=seed, progress=tick)
            mean, std, scaling = tiny_sd.encode_dataset(vae, images)
            vae.register_to_config(scaling_factor=scaling)
            with torch.no_grad():
                recon = (vae.decode(tiny_sd.encode_dataset(vae, val_images)[0]).sample.clamp(-1, 1) + 1) / 2
            figures["judge_accuracy_on_vae_reconstructions"] = _accuracy(net, recon, val_labels)

        with st.stage("unet + text encoder", recipe["unet_steps"]) as tick:
            tokenizer = CLIPTokenizer.from_pretrained(write_sd_tokenizer(out / "model" / "tokenizer"))
            captions = _caption_sampler(labels, np.random.default_rng(seed))
            unet, text_encoder = tiny_sd.train_text_to_image(
                mean, std, scaling, captions, tokenizer, steps=recipe["unet_steps"],
                batch_size=recipe["unet_batch"], lr=recipe["unet_lr"], seed=seed, progress=tick)
            _save_model(out / "model", vae, unet, text_encoder, tokenizer)

        with st.stage("clip", recipe["clip_steps"]) as tick:
            model = clip.train_clip(images, labels, out / "clip", steps=recipe["clip_steps"],
                                    batch_size=recipe["clip_batch"], seed=seed, progress=tick)
            clip.save_clip(model, out / "clip")
            shipped, _, clip_tok = clip.load_clip(out / "clip")  # score the half-precision weights we ship
            figures["clip_zero_shot_accuracy"] = clip.zero_shot_accuracy(shipped, clip_tok, val_float, val_labels)

        prompts = _validation_prompts()
        n = recipe["val_per_prompt"]
        with st.stage("validate samples", n * len(prompts)) as tick:
            pipe = tiny_sd.pipeline(vae, unet, text_encoder, tokenizer)
            images = tiny_sd.generate(pipe, prompts, n, steps=SAMPLER["steps"], guidance=SAMPLER["guidance"],
                                      seed=seed, progress=tick)
            samples = dict(zip(prompts, images.split(n)))
            figures.update(_sample_figures(net, samples))
            _save_grid(out / "samples.png", samples, recipe["grid_per_prompt"])

    seconds = {**st.seconds, "total": round(time.perf_counter() - t0, 1)}
    return _write_manifest(out, recipe, figures, seconds)


def _accuracy(net, images: torch.Tensor, labels: dict) -> dict[str, float]:
    pred = net.predict(images)
    return {a: round(float((pred[a] == labels[a]).float().mean()), 4) for a in pred}


def _caption_sampler(labels: dict, rng: np.random.Generator):
    names = {a: [world.ATTRIBUTES[a][int(i)] for i in labels[a]] for a in world.ATTRIBUTES}

    def captions(indices: torch.Tensor) -> list[str]:
        return [world.random_caption({a: names[a][int(i)] for a in names}, rng) for i in indices]

    return captions


def _save_model(folder: pathlib.Path, vae, unet, text_encoder, tokenizer) -> None:
    from diffusers import StableDiffusionPipeline

    from relearnbench.progress import no_transformers_bars
    from relearnbench.toy.tiny_sd import make_scheduler
    from relearnbench.toy.tokenizer import write_sd_tokenizer

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=make_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    with no_transformers_bars():  # its "Writing model shards" bar would break the stage bars
        pipe.save_pretrained(folder, safe_serialization=True)
    # transformers adds a 3.6 MB tokenizer.json; the vocab.json + merges.txt pair loads the same
    # ids in a tenth of a second and keeps the assets under 30 MB
    shutil.rmtree(folder / "tokenizer")
    write_sd_tokenizer(folder / "tokenizer")


def _validation_prompts() -> list[str]:
    prompts = []
    for c in ERASABLE.values():
        prompts += [p for p in c["forget_prompts"] + c["related_prompts"] + c["unrelated_prompts"] if p not in prompts]
    return prompts


def _sample_figures(net, samples: dict[str, torch.Tensor]) -> dict:
    """Forget rate per concept (images from its forget prompts judged as the concept) and benign
    correctness (images from benign prompts judged as every attribute their prompt names)."""
    per_prompt, forget, benign = {}, {}, []
    for p, images in samples.items():
        pred = net.predict(images)
        named = world.parse_prompt(p)
        ok = torch.ones(len(images), dtype=torch.bool)
        for a, v in named.items():
            ok &= pred[a] == world.ATTRIBUTES[a].index(v)
        per_prompt[p] = round(float(ok.float().mean()), 4)
    for name, c in ERASABLE.items():
        hits = [float((net.predict(samples[p])[c["attribute"]] == world.ATTRIBUTES[c["attribute"]].index(c["value"]))
                      .float().mean()) for p in c["forget_prompts"]]
        forget[name] = round(sum(hits) / len(hits), 4)
        benign += [per_prompt[p] for p in c["related_prompts"] + c["unrelated_prompts"]]
    return {"forget_concept_rate": forget, "benign_correct": round(sum(benign) / len(benign), 4),
            "prompt_correct": per_prompt}


def _save_grid(path: pathlib.Path, samples: dict[str, torch.Tensor], per_row: int, scale: int = 2) -> None:
    from PIL import Image, ImageDraw

    side, label_w = 32 * scale, 190
    grid = Image.new("RGB", (label_w + per_row * side, len(samples) * side), "white")
    draw = ImageDraw.Draw(grid)
    for r, (prompt, images) in enumerate(samples.items()):
        draw.text((4, r * side + side // 2 - 6), prompt, fill="black")
        for c, img in enumerate(images[:per_row]):
            arr = (img.permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
            grid.paste(Image.fromarray(arr).resize((side, side), Image.NEAREST), (label_w + c * side, r * side))
    grid.save(path)


def _write_manifest(out: pathlib.Path, recipe: dict, figures: dict, seconds: dict) -> dict:
    import diffusers
    import open_clip
    import transformers

    files = {p.relative_to(out).as_posix(): sha256(p) for p in sorted(out.rglob("*"))
             if p.is_file() and p.name != "manifest.json"}
    manifest = {
        "recipe_hash": recipe_hash(recipe),
        "recipe": recipe,
        "sampler": SAMPLER,
        "validation": figures,
        "seconds": seconds,
        "total_bytes": sum((out / f).stat().st_size for f in files),
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "open_clip": open_clip.__version__},
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
