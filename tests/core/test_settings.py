"""A setting means one thing (issue 31): a ``--set`` on a wrapped method's key reaches its wrapper unless the
wrapper's own key is set, for every wrapper; ``sample.*`` is the evaluation's alone, the generated training
images have ``generate.*``, so a new evaluation sampler keeps every unlearned model."""

import shutil
import sqlite3

import pytest
import torch

from relearnbench.config import build
from relearnbench.registry import METHODS
from tests.conftest import needs_toy

BASES = ("esd", "salun")  # the shipped loss-based methods whose lr, steps and clip a wrapper has its own of


@pytest.mark.parametrize("scale", ["toy", "sd14"])
@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("suffix", sorted(METHODS.suffixes()))
def test_a_set_on_the_base_reaches_every_wrapper(suffix, base, scale):
    name = f"{base}+{suffix}"
    wrapped = build(METHODS, name, scale, {base: {"lr": 1e-3, "steps": 7, "max_grad_norm": 0.25}})
    steps, lr = wrapped.schedule()
    assert (steps, lr) == (7, 1e-3) and wrapped.steps == 7
    assert wrapped.config.max_grad_norm == 0.25  # the loop clips with the wrapper's config
    weight = torch.nn.Parameter(torch.zeros(1))
    assert wrapped.optimizer([weight]).param_groups[0]["lr"] == 1e-3
    # the wrapper's own key, when set, wins (the base alone keeps the base's)
    own = build(METHODS, name, scale, {base: {"lr": 1e-3}, "meta": {"lr": 2e-5}})
    assert own.schedule()[1] == 2e-5 and own.base.config.lr == 1e-3
    # no --set: the preset's values as before (sd14: meta.lr 1e-5 of its own; toy: 0, the base's lr)
    plain = build(METHODS, name, scale, {})
    assert plain.config.lr == (1e-5 if scale == "sd14" else 0.0)


def test_a_reached_key_left_to_borrow_keeps_the_artifact_key():
    """On the toy preset meta.lr is 0 (the base's lr): the wrapper's config stays as it was, so the cells'
    unlearned models keep their keys."""
    wrapped = build(METHODS, "esd+meta", "toy", {"esd": {"lr": 1e-3}})
    assert wrapped.config.lr == 0.0 and wrapped.schedule()[1] == 1e-3


def test_the_dry_run_shows_the_reached_value(run_cli, tmp_path):
    out = run_cli("run", "--methods", "esd+meta", "--set", "esd.lr=1e-3", "--model", "sd14-random", "--dry-run",
                  cwd=tmp_path, check=True).stdout
    wrapper = out.split("+ meta (version")[1]
    assert "lr = 0.001    <- --set esd.lr (a wrapper follows its base's --set)" in wrapper


def test_sample_and_generate_are_separate_namespaces():
    from relearnbench.runner import plan, unlearn_key
    from relearnbench.spec import build_spec

    def spec(sets):
        return build_spec(None, {"models": "tiny", "methods": "esd", "concepts": "triangle"}, sets)

    base, p = spec({}), plan(spec({}))
    # the toy preset generates at the settings the evaluation sampler had before (keys of old runs stay)
    assert p.generate["toy"].generation() == {"steps": 10, "guidance": 5.0}
    key = unlearn_key(p, "tiny", "triangle", "esd", 0)
    assert unlearn_key(plan(spec({"sample": {"steps": 3, "guidance": 2.0}})), "tiny", "triangle", "esd", 0) == key
    assert unlearn_key(plan(spec({"generate": {"steps": 3}})), "tiny", "triangle", "esd", 0) != key
    assert base.sets == {}


def test_a_context_needs_both_samplers():
    from relearnbench.api import Context

    with pytest.raises(TypeError, match="sample_config"):
        Context(device="cpu", dtype=None, seed=0)


SMALL = ["--concepts", "triangle", "--methods", "salun", "--attacks", "none", "--metrics", "asr",  # SalUn trains on
         "--set", "salun.steps=1", "--set", "salun.forget_images=2", "--set", "salun.retain_images=2",  # generated
         "--set", "salun.batch_size=2", "--set", "sample.images_per_prompt=1",  # images (triangle's train_data)
         "--set", "sample.benign_images_per_prompt=1", "--jobs", "1", "--quiet"]


@needs_toy
# slow (35 s quiet): the default run pins the key this reuse follows (sample.* keeps it: test_grid.py's
# test_the_unlearned_model_key_covers_the_sampler_of_the_generated_training_images) and reuse within a run (test_jobs)
@pytest.mark.slow
def test_a_new_evaluation_sampler_reuses_every_unlearned_model(tmp_path, run_cli):
    """A finished toy grid, evaluated again with another sample.steps (into a directory that starts with its
    artifacts): every unlearned model and every generated training image is the cached one."""
    first, second = tmp_path / "first", tmp_path / "second"
    run_cli("run", *SMALL, "--set", "sample.steps=4", "--out", first, check=True)
    shutil.copytree(first / "artifacts", second / "artifacts")
    before = {p.relative_to(second): p.read_bytes() for p in (second / "artifacts").rglob("*") if p.is_file()}
    run_cli("run", *SMALL, "--set", "sample.steps=3", "--out", second, check=True)
    after = {p.relative_to(second): p for p in (second / "artifacts").rglob("*") if p.is_file()}
    trained = [p for p in after if p.parts[1] in ("unlearn", "data")]
    assert any(p.parts[1] == "unlearn" for p in trained) and any(p.parts[1] == "data" for p in trained)
    assert all(p in before and after[p].read_bytes() == before[p] for p in trained)  # none new, none rewritten
    assert any(p.parts[1] == "eval" and p not in before for p in after)  # the evaluation itself ran again

    def unlearn_seconds(run):
        with sqlite3.connect(run / "results.sqlite") as db:
            return db.execute("SELECT seconds FROM records WHERE stage = 'pre' LIMIT 1").fetchone()[0]
    assert unlearn_seconds(first) == unlearn_seconds(second)  # the cached run's own time: it was not rerun


def test_the_generated_images_sampler_takes_pndm_and_a_negative_prompt():
    """generate.scheduler = "pndm" (SD-1.x's own sampler, as the meta-unlearning authors generated their images)
    and generate.negative_prompt change the images, and enter their cache key only when set."""
    from relearnbench.data import GenerateConfig, images_for
    from relearnbench.testing import context, tiny_concept, tiny_model

    model, concept = tiny_model(), tiny_concept()
    configs = [GenerateConfig(steps=3), GenerateConfig(steps=3, scheduler="pndm"),
               GenerateConfig(steps=3, scheduler="pndm", negative_prompt="blurry")]
    images = [images_for(["a triangle"], 2, concept, model, context(generate_config=cfg, base=lambda: model),
                         source="generate")[0] for cfg in configs]
    assert not torch.equal(images[0], images[1]) and not torch.equal(images[1], images[2])
    assert [cfg.generation() for cfg in configs] == [
        {"steps": 3, "guidance": 5.0}, {"steps": 3, "guidance": 5.0, "scheduler": "pndm"},
        {"steps": 3, "guidance": 5.0, "scheduler": "pndm", "negative_prompt": "blurry"}]
