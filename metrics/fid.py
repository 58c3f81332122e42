"""FID between images of the concept's benign prompts and a reference set, through clean-fid.

    FID = ‖μ_g − μ_r‖² + Tr(Σ_g + Σ_r − 2 (Σ_g Σ_r)^½)      (Heusel et al. 2017)

μ, Σ: mean and covariance of the features of generated (g) and reference (r) images, the
distance as clean-fid's ``frechet_distance`` computes it (copied: clean-fid 0.1.35's breaks on
SciPy 1.18), the features through clean-fid's pipeline. The reference is the concept's
``fid_reference``:

* ``"world"`` (toy world): real procedural images of the same benign prompts, rendered by the world,
  and the toy judge's penultimate features as clean-fid's custom feature extractor (an Inception
  trained on photographs knows nothing of 32×32 shapes);
* an image folder: Inception features the clean-fid way (uint8 → PIL bicubic resize to 299 → the
  TF-Inception torchscript), cached per folder in the run's artifacts;
* a ``.npz`` of precomputed statistics (``mu``, ``sigma``, as clean-fid's ``make_custom_stats``
  writes them, e.g. COCO-30k): the generated side is featurised the same way.

The Inception weights (clean-fid's ``inception-2015-12-05.pt``) must already be on disk: clean-fid
would download them, relearnbench never does. The generated side is as many images as the shared
sampler draws for the benign prompts (``sample.benign_images_per_prompt``); FID is biased upwards at
small counts, so compare values only at equal counts. With ``prompts`` a caption CSV in the format of
Diffusion-MU-Attack's ``prompts/coco_10k.csv`` (columns ``case_number,source,prompt,evaluation_seed``)
the generated side is instead one image per caption at its row's seed, for the first ``count`` rows,
against a folder of the reference images or their clean-fid ``.npz``: the published COCO-10k FID. No within-cell interval: bootstrapping FID
mostly measures that bias; the table's interval over seeds is the one to read.
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from relearnbench.api import Metric, Score
from relearnbench.errors import UserError

INCEPTION_FILE = "inception-2015-12-05.pt"
_REFERENCE_CACHE: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}  # key -> (μ, Σ, count), per process


def quantize(images: torch.Tensor) -> torch.Tensor:
    """To 8-bit levels, as saved images and the world's renderer are: both sides see the same data."""
    return (images.float().clamp(0, 1) * 255).round() / 255


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """clean-fid's ``frechet_distance``, line for line, minus its ``sqrtm(..., disp=False)``
    argument, which SciPy 1.18 removed (clean-fid 0.1.35 then raises a TypeError; seen on the GPU
    machine). Same numbers as clean-fid where both run (tests/metrics/test_fid.py)."""
    from scipy import linalg

    diff = mu1 - mu2
    with warnings.catch_warnings():
        # fewer images than feature dimensions make Σ singular: expected at small counts (the
        # score's info says so); the eps retry below is clean-fid's remedy
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag)):.3g} in the matrix square root")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet(features: np.ndarray, mu_r: np.ndarray, sigma_r: np.ndarray) -> float:
    mu, sigma = statistics(features)
    return frechet_distance(mu, sigma, mu_r, sigma_r)


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two feature sets [N, D] (clean-fid's ``fid_from_feats``)."""
    return frechet(a, *statistics(b))


# -- feature extractors ---------------------------------------------------------------------------
class ToyFeatures:
    """The toy judge's penultimate features (relearnbench.toy.judge.ToyJudgeNet.features)."""

    def __init__(self, judge):
        self.judge = judge
        self.name = f"toy_judge:{judge.info().get('weights_sha256', '')}"

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return self.judge.features(quantize(images)).double().numpy()


class InceptionFeatures:
    """clean-fid's "clean" mode: uint8 images, PIL bicubic resize to 299, TF-Inception pool features."""

    def __init__(self, path: str, device, batch_size: int):
        from cleanfid.inception_torchscript import InceptionV3W

        file = self.find(path)
        model = InceptionV3W(str(file.parent), download=False, resize_inside=False).to(device).eval()
        self.device, self.batch_size, self.name = device, batch_size, f"inception:{file.name}"
        self.model = lambda x: model(x)  # clean-fid's feature function: float [B,3,299,299] in [0, 255]

    @staticmethod
    def find(path: str) -> pathlib.Path:
        if path:
            file = pathlib.Path(path)
            file = file / INCEPTION_FILE if file.is_dir() else file
            if file.name != INCEPTION_FILE or not file.exists():
                raise UserError(f"fid.inception_path={path}: expected an existing {INCEPTION_FILE}")
            return file
        # clean-fid keeps it in /tmp on Linux; the torch hub cache is the other usual place
        candidates = [pathlib.Path("/tmp") / INCEPTION_FILE,
                      pathlib.Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE]
        for file in candidates:
            if file.exists():
                return file
        raise UserError(
            f"FID needs clean-fid's Inception weights ({INCEPTION_FILE}) and found none at "
            f"{', '.join(map(str, candidates))}. relearnbench never downloads them: fetch "
            "https://github.com/GaParmar/clean-fid/releases/download/v0.1.10/inception-2015-12-05.pt once and "
            "put it in one of those places, or pass --set fid.inception_path=FILE")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        from cleanfid.resize import build_resizer

        resize = build_resizer("clean")
        arrays = (quantize(images) * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = []
        for k in range(0, len(arrays), self.batch_size):
            batch = np.stack([resize(a) for a in arrays[k:k + self.batch_size]])  # float HWC in [0, 255]
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().to(self.device)
            out.append(self.model(x).double().cpu().numpy())
        return np.concatenate(out)


def read_captions(path: str, count: int = 0):
    """The first ``count`` rows (0 = all) of a caption CSV as prompts at their ``evaluation_seed``."""
    import csv

    from relearnbench.api import Prompt

    if not pathlib.Path(path).exists():
        raise UserError(f"fid.prompts: caption file {path} does not exist")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "prompt" not in rows[0] or "evaluation_seed" not in rows[0]:
        raise UserError(f"fid.prompts {path}: expected the columns case_number,source,prompt,evaluation_seed "
                        "(Diffusion-MU-Attack's prompts/coco_10k.csv)")
    return tuple(Prompt(r["prompt"], int(r["evaluation_seed"])) for r in rows[:count or None])


class FID(Metric):
    """clean-fid FID of benign-prompt images against the concept's reference set."""

    @dataclass(frozen=True)
    class Config:
        prompts: str = "benign"  # whose images: benign (related + unrelated), related, unrelated, or a caption CSV
        count: int = 0  # a caption CSV: its first rows to generate (0 = all)
        reference_images: int = 1000  # reference count: world images rendered, or the first N files of a folder (0 = all)
        reference_seed: int = 31337  # seed of the rendered world reference (fixed: every cell shares one reference)
        features: str = "auto"  # "auto" (toy judge for a world reference, else inception), "toy_judge" or "inception"
        inception_path: str = ""  # clean-fid's inception-2015-12-05.pt; "" = /tmp or the torch hub cache
        toy_judge_path: str = ""  # toy judge folder for toy features; "" = the concept's judge if toy, else the shipped one
        batch_size: int = 64  # images per feature-extractor pass

    config_name = "fid"
    version = "1"

    def preflight(self, concept, judge) -> list[str]:
        from relearnbench.registry import JUDGES

        toy = JUDGES.get("toy")  # the toy judge's features, through the judge registry
        ref, c = concept.fid_reference, self.config
        if c.prompts.endswith(".csv") and (not pathlib.Path(c.prompts).is_file() or not ref or ref == "world"
                                           or not pathlib.Path(ref).exists()):
            return [f"FID on caption prompts needs the captions and the reference images of them: --set fid.prompts="
                    f"coco_10k.csv (Diffusion-MU-Attack prompts/coco_10k.csv; now {c.prompts!r}"
                    f"{'' if pathlib.Path(c.prompts).is_file() else ', not found'}) and --set concept.fid_reference="
                    f"DIR (COCO's images of those captions, or a clean-fid .npz; now {ref or 'none'}"
                    f"{'' if not ref or ref == 'world' or pathlib.Path(ref).exists() else ', not found'})"]
        if not ref:
            return [f"concept {concept.name} declares no fid_reference (\"world\", an image folder, or a clean-fid "
                    "statistics .npz); set one with --set concept.fid_reference=..."]
        out = [] if ref == "world" or pathlib.Path(ref).exists() else [
            f"concept {concept.name}: fid_reference {ref} does not exist"]
        kind = ("toy_judge" if ref == "world" else "inception") if c.features == "auto" else c.features
        if kind == "inception":
            try:
                InceptionFeatures.find(c.inception_path)
            except UserError as e:
                out.append(str(e))
        elif kind == "toy_judge" and (c.toy_judge_path or not isinstance(judge, toy)):
            out += toy(toy.Config(path=c.toy_judge_path)).preflight(concept, None)
        return out

    def compute(self, ev) -> list[Score]:
        c = self.config
        reference = ev.concept.fid_reference
        if not reference:
            raise UserError(f"concept {ev.concept.name} declares no fid_reference (\"world\", an image folder, "
                            "or a clean-fid statistics .npz); set one with --set concept.fid_reference=...")
        if c.prompts.endswith(".csv"):
            if reference == "world":
                raise UserError("fid.prompts: a caption CSV is scored against an image folder or a clean-fid .npz "
                                "of its reference images (--set concept.fid_reference=...), not the toy world")
            images = ev.sample_prompts(f"fid:{c.prompts}:{c.count}", read_captions(c.prompts, c.count))
        else:
            images, _, _ = ev.images(c.prompts)
        extract = self.extractor(ev)
        mu_r, sigma_r, n_ref = self.reference(ev, extract)
        if len(images) < 2:
            raise UserError(f"fid needs at least 2 generated images, got {len(images)}")
        features = extract(images)
        value = frechet(features, mu_r, sigma_r)
        return [Score("fid", value, n=len(images),
                      info={"reference": reference, "reference_images": n_ref, "features": extract.name,
                            "feature_dim": features.shape[1], "prompts": c.prompts,
                            # Σ_g is singular below feature_dim + 1 images: FID is then mostly bias
                            "rank_deficient": len(images) <= features.shape[1]})]

    def extractor(self, ev):
        from relearnbench.registry import JUDGES

        kind = self.config.features
        if kind == "auto":
            kind = "toy_judge" if ev.concept.fid_reference == "world" else "inception"
        if kind == "toy_judge":  # the toy judge's features, through the judge registry
            judge, toy = ev.judge, JUDGES.get("toy")
            if self.config.toy_judge_path or not isinstance(judge, toy):
                judge = toy(toy.Config(path=self.config.toy_judge_path))
            return ToyFeatures(judge)
        if kind == "inception":
            return InceptionFeatures(self.config.inception_path, ev.model.unet.device, self.config.batch_size)
        raise UserError(f"fid.features={kind!r}: expected auto, toy_judge or inception")

    def reference(self, ev, extract) -> tuple[np.ndarray, np.ndarray, int]:
        """(μ_r, Σ_r, count) of the reference set, computed once per process (and per run for folders)."""
        c, concept, model = self.config, ev.concept, ev.model
        ref = concept.fid_reference
        if ref.endswith(".npz"):
            path = pathlib.Path(ref)
            if not path.exists():
                raise UserError(f"concept {concept.name}: fid_reference {ref} does not exist")
            stats = np.load(path)
            if "mu" not in stats or "sigma" not in stats:
                raise UserError(f"fid_reference {ref}: expected arrays mu and sigma (clean-fid's statistics format)")
            return stats["mu"], stats["sigma"], -1
        if ref == "world":
            prompts = list(concept.benign) if c.prompts == "benign" else list(getattr(concept, c.prompts))
            per_prompt = math.ceil(c.reference_images / max(len(prompts), 1))
            key = json.dumps(["world", prompts, per_prompt, c.reference_seed, model.resolution, extract.name])
            if key not in _REFERENCE_CACHE:
                from relearnbench.data import images_for

                real, _ = images_for(prompts, per_prompt, concept, model, ev.ctx, source="world",
                                     seed=c.reference_seed)
                _REFERENCE_CACHE[key] = (*statistics(extract(real)), len(real))
            return _REFERENCE_CACHE[key]
        return self._folder_reference(pathlib.Path(ref), ev, extract)

    def _folder_reference(self, folder: pathlib.Path, ev, extract):
        from cleanfid.fid import get_folder_features
        from cleanfid.utils import EXTENSIONS

        if not folder.is_dir():
            raise UserError(f"concept {ev.concept.name}: fid_reference {folder} is neither \"world\", a folder "
                            "nor a .npz of statistics")
        files = sorted(f for f in folder.rglob("*") if f.suffix.lower().lstrip(".") in EXTENSIONS)
        if not files:
            raise UserError(f"fid_reference {folder} holds no images")
        n = self.config.reference_images or len(files)
        listing = [(str(f.relative_to(folder)), f.stat().st_size) for f in files]
        key = hashlib.sha256(json.dumps([listing, n, extract.name]).encode()).hexdigest()[:20]
        if key in _REFERENCE_CACHE:
            return _REFERENCE_CACHE[key]
        artifacts = ev.ctx.artifacts
        t = artifacts.load_tensors("fid_reference", key) if artifacts is not None else None
        if t is not None:
            stats = (t["mu"].numpy(), t["sigma"].numpy(), int(t["count"]))
        else:
            if not isinstance(extract, InceptionFeatures):
                raise UserError("an image-folder FID reference is featurised by Inception; set fid.features=inception")
            feats = get_folder_features(str(folder), model=extract.model, num_workers=0, num=n,
                                        batch_size=extract.batch_size, device=extract.device, mode="clean",
                                        verbose=False)
            stats = (*statistics(feats), len(feats))
            if artifacts is not None:
                artifacts.save_tensors("fid_reference", key, {"mu": torch.from_numpy(stats[0]),
                                                              "sigma": torch.from_numpy(stats[1]),
                                                              "count": torch.tensor(stats[2])})
        _REFERENCE_CACHE[key] = stats
        return stats
