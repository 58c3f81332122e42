import pathlib
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from relearnbench.errors import UserError
from relearnbench.metrics.fid import (FID, InceptionFeatures, ToyFeatures, fid_from_features, frechet_distance,
                                     statistics)


@pytest.fixture(scope="module")
def real(toy_judge, world_images):
    images, _, _ = world_images(["a circle", "a square", "a diamond", "a cross"], 100, seed=3)
    return images


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise(toy_judge, real):
    features = ToyFeatures(toy_judge)
    f = features(real)
    assert abs(fid_from_features(f, f)) < 1e-6
    g = torch.Generator().manual_seed(0)
    fids = [fid_from_features(f, features((real + s * torch.randn(real.shape, generator=g)).clamp(0, 1)))
            for s in (0.02, 0.1, 0.3)]
    assert 0 < fids[0] < fids[1] < fids[2], fids


def test_same_distance_as_clean_fid():
    """Our copy of clean-fid's Fréchet distance (theirs calls a SciPy argument SciPy 1.18 removed)."""
    from cleanfid import fid as cleanfid

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(0.3, 1.2, size=(200, 16))
    try:
        theirs = cleanfid.fid_from_feats(a, b)
    except TypeError as e:
        pytest.skip(f"clean-fid's frechet_distance does not run with this SciPy ({e})")
    assert fid_from_features(a, b) == pytest.approx(theirs, rel=1e-9)
    assert frechet_distance(*statistics(a), *statistics(a)) == pytest.approx(0, abs=1e-8)


def _two_by_two(mu1, s1, mu2, s2):
    """The Fréchet distance of N(μ1, Σ1) and N(μ2, Σ2) in two dimensions, in closed form: Σ1Σ2 has positive
    eigenvalues λ1, λ2, so tr √(Σ1Σ2) = √λ1 + √λ2 = √(tr Σ1Σ2 + 2 √det Σ1Σ2)."""
    m = s1 @ s2
    tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def test_frechet_distance_of_known_gaussians_in_closed_form():
    """A reference that needs no other FID code (test_same_distance_as_clean_fid skips where clean-fid's own
    breaks): Gaussians whose distance is known in closed form, and two sample sets through fid_from_features."""
    rng = np.random.default_rng(1)
    # commuting covariances Q diag(d) Qᵀ: d² = ‖μ1 − μ2‖² + Σ (√d1 − √d2)²
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    d1, d2 = rng.uniform(0.5, 3.0, 6), rng.uniform(0.1, 2.0, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = float((mu1 - mu2) @ (mu1 - mu2) + ((np.sqrt(d1) - np.sqrt(d2)) ** 2).sum())
    assert frechet_distance(mu1, q @ np.diag(d1) @ q.T, mu2, q @ np.diag(d2) @ q.T) == pytest.approx(expected, rel=1e-9)
    # covariances that do not commute
    s1, s2 = np.array([[2.0, 0.7], [0.7, 1.0]]), np.array([[0.5, -0.2], [-0.2, 1.5]])
    mu1, mu2 = np.array([0.3, -1.0]), np.array([1.0, 0.5])
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_two_by_two(mu1, s1, mu2, s2), rel=1e-9)
    # feature sets: their means and unbiased covariances (clean-fid's np.cov), then the closed form
    a = rng.multivariate_normal(mu1, s1, size=500)
    b = rng.multivariate_normal(mu2, s2, size=300)
    stats = [(x.sum(0) / len(x), (x - x.mean(0)).T @ (x - x.mean(0)) / (len(x) - 1)) for x in (a, b)]
    assert fid_from_features(a, b) == pytest.approx(_two_by_two(*stats[0], *stats[1]), rel=1e-9)


def test_fid_of_two_real_sets_is_small_next_to_another_world(toy_judge, real, world_images):
    features = ToyFeatures(toy_judge)
    other_seed, _, _ = world_images(["a circle", "a square", "a diamond", "a cross"], 100, seed=4)
    other_prompts, _, _ = world_images(["a triangle"], 400, seed=4)
    same = fid_from_features(features(real), features(other_seed))
    different = fid_from_features(features(real), features(other_prompts))
    assert same * 5 < different, (same, different)


def test_fid_metric_against_the_world(toy_judge, concept, tmp_path, real_eval, make_ctx):
    ctx = make_ctx(toy_judge)
    fid = FID(FID.Config(reference_images=400))
    real = fid.compute(real_eval(concept, ctx, "pre", images_per_prompt=100))[0]

    class Noisy(real_eval):
        def images(self, which):
            images, texts, index = super().images(which)
            return (images + 0.2 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1), \
                texts, index

    noisy = fid.compute(Noisy(concept, ctx, "post", images_per_prompt=100))[0]
    assert real.metric == "fid" and real.n == 200 and real.info["reference_images"] == 400
    assert real.info["features"].startswith("toy_judge")
    assert 0 <= real.value < noisy.value / 5, (real.value, noisy.value)

    # the same reference as precomputed statistics gives the same number
    from relearnbench.data import images_for

    ref, _ = images_for(list(concept.benign), 200, concept, SimpleNamespace(resolution=32), ctx, source="world",
                        seed=fid.config.reference_seed)
    mu, sigma = statistics(ToyFeatures(toy_judge)(ref))
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=sigma)
    npz = FID(FID.Config(features="toy_judge")).compute(
        real_eval(replace(concept, fid_reference=str(tmp_path / "stats.npz")), ctx, "pre",
                            images_per_prompt=100))[0]
    assert npz.value == pytest.approx(real.value, rel=1e-6)


def test_fid_needs_a_reference(toy_judge, concept, real_eval, make_ctx):
    with pytest.raises(UserError, match="fid_reference"):
        FID().compute(real_eval(replace(concept, fid_reference=""), make_ctx(toy_judge), "pre"))


def test_inception_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    if pathlib.Path("/tmp/inception-2015-12-05.pt").exists():
        pytest.skip("clean-fid's Inception weights are on this machine")
    with pytest.raises(UserError, match="never downloads"):
        InceptionFeatures.find("")
    with pytest.raises(UserError, match="inception_path"):
        InceptionFeatures.find(str(tmp_path / "nothing.pt"))


def test_fid_on_a_caption_csv_generates_one_image_per_caption_at_its_seed(toy_judge, concept, tiny_eval, tmp_path):
    from relearnbench.api import Prompt
    from relearnbench.diffusion import sample

    captions = tmp_path / "coco.csv"
    captions.write_text("case_number,source,prompt,evaluation_seed\n0,coco,a red circle,11\n1,coco,a cat,22\n"
                        "2,coco,a dog,33\n")
    mu, sigma = statistics(ToyFeatures(toy_judge)(torch.rand(8, 3, 32, 32)))
    np.savez(tmp_path / "ref.npz", mu=mu, sigma=sigma)
    ev = tiny_eval
    ev.concept = replace(concept, fid_reference=str(tmp_path / "ref.npz"))
    try:
        fid = FID(FID.Config(prompts=str(captions), count=2, features="toy_judge"))
        score = fid.compute(ev)[0]
        assert score.n == 2 and np.isfinite(score.value)
        images = ev._images[f"fid:{captions}:2"]
        cfg = ev.config
        expected = sample(ev.model, [Prompt("a red circle", 11), Prompt("a cat", 22)], 1, steps=cfg.steps,
                          guidance=cfg.guidance, seed=0, batch_size=cfg.batch_size)
        assert torch.allclose(images, expected, atol=1e-5)  # the rows' own seeds, whatever the stage's seed
        with pytest.raises(UserError, match="not the toy world"):
            fid.compute(type(ev)(ev.model, replace(concept, fid_reference="world"), ev.ctx, "pre"))
    finally:
        ev.concept = concept
