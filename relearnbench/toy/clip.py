"""The toy world's CLIP: a tiny open_clip model trained contrastively on captioned world images.

It gives the toy world a CLIP score computed by the same open_clip code as on Stable Diffusion.
Saved in open_clip's own folder format (``open_clip_config.json`` holding the custom model config,
plus ``open_clip_model.safetensors``), which open_clip loads with the ``local-dir:`` schema and no
network. Weights are stored in half precision to keep the shipped assets under 30 MB: the 49,408-
token embedding table that open_clip's tokenizer needs is most of the model.
"""

from __future__ import annotations

import json
import pathlib

import torch
from torch.nn import functional as F

from relearnbench.toy import world

CONFIG, WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "patch_size": 4, "width": 64, "layers": 3, "head_width": 32, "mlp_ratio": 4},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def write_config(directory) -> pathlib.Path:
    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    preprocess = {"size": [32, 32], "mode": "RGB", "mean": list(MEAN), "std": list(STD),
                  "interpolation": "bicubic", "resize_mode": "shortest"}
    (out / CONFIG).write_text(json.dumps({"model_cfg": MODEL_CFG, "preprocess_cfg": preprocess}, indent=2) + "\n")
    return out


def load_clip(directory):
    """(model, preprocess, tokenizer) from a folder written by the build; offline.

    ``preprocess`` takes a PIL image; ``tokenizer(list_of_str)`` gives [N, 77] ids."""
    import open_clip

    d = pathlib.Path(directory)
    if not (d / WEIGHTS).exists():
        raise FileNotFoundError(f"no toy CLIP at {d} (expected {WEIGHTS}); rebuild with `relearnbench toy build`")
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{d}")
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{d}")


def save_clip(model, directory) -> None:
    from safetensors.torch import save_file

    out = write_config(directory)
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS))


def normalize(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, 32, 32] in [0, 1] → the model's input (what ``preprocess`` does to a 32×32 PIL image)."""
    return (images - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def _named(captions: list[str]) -> torch.Tensor:
    """[N, n_attributes] index of the value each caption names, -1 where it names none."""
    rows = []
    for c in captions:
        named = world.parse_prompt(c)
        rows.append([values.index(named[a]) if a in named else -1 for a, values in world.ATTRIBUTES.items()])
    return torch.tensor(rows)


def train_clip(images: torch.Tensor, labels: dict[str, torch.Tensor], directory, *, steps: int,
               batch_size: int = 128, lr: float = 2e-3, seed: int = 0, progress=None):
    """Contrastive training on uint8 images [N, 3, 32, 32] with random partial captions.

    A partial caption ("a triangle") truly matches every triangle in the batch, so the InfoNCE
    targets spread over all consistent pairs instead of the diagonal alone (open_clip's ClipLoss
    assumes one positive per row, which would teach it to tell identical captions apart)."""
    import numpy as np
    import open_clip

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    write_config(directory)
    model = open_clip.CLIP(**MODEL_CFG)  # what create_model("local-dir:...") builds, minus its no-weights warning
    tokenizer = open_clip.get_tokenizer(f"local-dir:{directory}")
    attrs = list(world.ATTRIBUTES)
    truth = torch.stack([labels[a] for a in attrs], 1)
    ids_cache: dict[str, torch.Tensor] = {}

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (batch_size,), generator=g)
        captions = [world.random_caption({a: world.ATTRIBUTES[a][int(truth[i, k])] for k, a in enumerate(attrs)}, rng)
                    for i in idx]
        for c in set(captions) - ids_cache.keys():
            ids_cache[c] = tokenizer([c])[0]
        named = _named(captions)
        # consistent[i, j]: caption j is true of image i
        consistent = ((named[None, :, :] < 0) | (named[None, :, :] == truth[idx][:, None, :])).all(-1).float()
        img_f, txt_f, scale = model(normalize(images[idx].float() / 255),
                                    torch.stack([ids_cache[c] for c in captions]))[:3]
        logits = scale * img_f @ txt_f.T
        loss = 0.5 * (F.cross_entropy(logits, consistent / consistent.sum(1, keepdim=True))
                      + F.cross_entropy(logits.T, consistent.T / consistent.T.sum(1, keepdim=True)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # open_clip's cap: temperature ≥ 0.01
        if progress is not None:
            progress(loss=loss.item())
    return model.eval()


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, images: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per attribute: pick the class prompt ("a photo of a triangle", "a photo of a striped
    shape", ...) closest to each real image (float [N, 3, 32, 32] in [0, 1])."""
    img = F.normalize(model.encode_image(normalize(images)), dim=-1)
    out = {}
    for a, values in world.ATTRIBUTES.items():
        prompts = [world.caption(**{k: (v if k == a else None) for k in ("shape", "colour", "pattern")},
                                 template="a photo of a {}") for v in values]
        txt = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
        out[a] = float(((img @ txt.T).argmax(1) == labels[a]).float().mean())
    return out
