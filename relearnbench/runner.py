"""Turning a spec into records: plan (validate everything first), then the two jobs every executor
runs — unlearn-and-evaluate-pre per (model, concept, method, seed), and attack-and-evaluate per cell.

Both jobs are plain functions of (spec, artifacts, keys) so a Ray worker can run them as well as this
process; their outputs are cached as content-addressed artifacts in the run directory. They return
records and never open the results store: the driver alone writes it (``write_result``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import pathlib
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from relearnbench import __version__, seeds
from relearnbench.api import Context, Score
from relearnbench.config import build, instantiate, make_config, preset_file_layer
from relearnbench.errors import UserError, near_misses
from relearnbench.memory import measure
from relearnbench.spec import DTYPES, Spec, spec_dict
from relearnbench.artifacts import Artifacts
from relearnbench.store import Record, Store

CORE_NAMESPACES = ("model", "concept", "sample", "generate", "unlearn")


# -- the plan: every name, concept and config resolved before any work -----------------------------
@dataclass
class Plan:
    spec: Spec
    scales: dict[str, str]  # model name -> preset scale ("toy" | "sd14")
    model_config: Any
    concepts: dict[str, Any]
    sample: dict[str, Any]  # scale -> SampleConfig, the evaluation's sampler
    generate: dict[str, Any]  # scale -> GenerateConfig, the sampler of generated training images
    plugins: dict[tuple, Any]  # (kind, name, scale) -> plugin instance
    judges: dict[tuple, Any]  # (concept, scale) -> judge instance
    needs_model: bool = True
    curve_metrics: set = field(default_factory=set)  # metrics scored at intermediate curve points
    unlearn: Any = None  # relearnbench.memory.UnlearnConfig (unlearn.*): how the trained UNet is held

    def method(self, name, model):
        return self.plugins[("methods", name, self.scales[model])]

    def attack(self, name, model):
        return self.plugins[("attacks", name, self.scales[model])]

    def metrics(self, model):
        return [self.plugins[("metrics", m, self.scales[model])] for m in self.spec.metrics]


def plan(spec: Spec) -> Plan:
    from relearnbench.concepts import load_concept
    from relearnbench.data import GenerateConfig
    from relearnbench.evaluate import SampleConfig
    from relearnbench.models import ModelConfig, folder_preset
    from relearnbench.registry import ATTACKS, JUDGES, METHODS, METRICS, MODELS

    sets, used = spec.sets, set(CORE_NAMESPACES)
    scales = {}
    for m in spec.models:
        if m in MODELS:
            scales[m] = MODELS.meta(m).get("preset", "sd14")
        elif pathlib.Path(m).is_dir():  # a diffusers folder: its architecture's presets (sd14, sd21, sdxl)
            scales[m] = folder_preset(pathlib.Path(m))
        else:
            MODELS.check(m)  # raises with the known names
    for kind, registry, names in (("methods", METHODS, spec.methods), ("attacks", ATTACKS, spec.attacks),
                                  ("metrics", METRICS, spec.metrics)):
        for n in names:
            registry.check(n)
    model_config = make_config(ModelConfig, "model", sets.get("model", {}))
    concepts = {c: load_concept(c, sets.get("concept")) for c in spec.concepts}
    sample = {s: make_config(SampleConfig, "sample", preset_file_layer(SampleConfig, s), sets.get("sample", {}))
              for s in set(scales.values())}
    generate = {s: make_config(GenerateConfig, "generate", preset_file_layer(GenerateConfig, s),
                               sets.get("generate", {})) for s in set(scales.values())}
    plugins, judges = {}, {}
    for scale in set(scales.values()):
        for kind, registry, names in (("methods", METHODS, spec.methods), ("attacks", ATTACKS, spec.attacks),
                                      ("metrics", METRICS, spec.metrics)):
            for n in names:
                plugins[(kind, n, scale)] = build(registry, n, scale, sets, used)
    needs_model = any(p.needs_model for p in plugins.values())
    if any(p.needs_model for (k, _, _), p in plugins.items() if k == "metrics"):
        for scale in set(scales.values()):
            for c, concept in concepts.items():
                JUDGES.check(concept.judge)
                judges[(c, scale)] = instantiate(JUDGES.get(concept.judge), scale, sets, concept.judge_config, used)
    unknown = sorted(set(sets) - used)
    if unknown:
        raise UserError(f"--set {unknown[0]}.*: no plugin in this run reads namespace {unknown[0]!r}; "
                        f"{near_misses(unknown[0], sorted(used))}")
    curve = {m for m in spec.metrics if METRICS.meta(m).get("curve", True)}
    from relearnbench.memory import UnlearnConfig

    unlearn = make_config(UnlearnConfig, "unlearn", sets.get("unlearn", {}))
    return Plan(spec, scales, model_config, concepts, sample, generate, plugins, judges, needs_model, curve, unlearn)


_PLANS: dict[str, Plan] = {}


def cached_plan(spec: Spec) -> Plan:
    key = json.dumps(spec_dict(spec), sort_keys=True, default=str)
    if key not in _PLANS:
        _PLANS[key] = plan(spec)
    return _PLANS[key]


# -- hashing and provenance -------------------------------------------------------------------------
def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def versions() -> dict:
    import importlib.metadata as md

    out = {"relearnbench": __version__}
    for pkg in ("torch", "diffusers", "transformers", "peft", "open_clip_torch", "clean-fid", "nudenet"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def seed_everything(seed: int):
    """Python's, numpy's and torch's global RNGs, torch's and numpy's only where torch is imported: a cell that
    needs a model has imported it by the time it seeds (loading the model does), and the torch-free test fakes
    never import it (a dummy grid's processes start in a second, not four)."""
    import random

    random.seed(seed)
    if "torch" in sys.modules:
        import numpy as np
        import torch

        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)


def run_attack(attack, model, concept, ctx: Context, evaluate) -> None:
    """An attack's run as every cell runs it: the global RNGs seeded for the attack from the cell's seed
    (``ctx.seed``), then ``attack.run``. ``attack_job`` and ``relearnbench export`` (which reruns a cell's
    attack to keep its model) both run attacks through here."""
    seed_everything(seeds.of(ctx.seed, "attack"))
    attack.run(model, concept, ctx, evaluate)


# -- the worker side: models and judges cached per process -------------------------------------------
_BASE: dict[tuple, Any] = {}
_TRAINING: set[tuple] = set()  # models whose original is not cached while a method trains (``without_original``)


def _base_key(p: Plan, name: str) -> tuple:
    return name, p.model_config, p.spec.device, DTYPES[p.spec.dtype]


def base_model(p: Plan, name: str):
    """The original model ``name``, loaded once per process and cached (never modified: cells copy it); while a
    method trains (``without_original``) loaded anew on each call and not cached. Loading leaves torch's global
    RNGs as they were (a random model's loader seeds them), so a load during training changes no number."""
    import torch

    from relearnbench.models import load_model

    key = _base_key(p, name)
    if key in _BASE:
        return _BASE[key]
    device = torch.device(p.spec.device)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        model = load_model(name, p.model_config, device=p.spec.device, dtype=getattr(torch, key[3]))
    if key not in _TRAINING:
        _BASE[key] = model
    return model


def original_copy(p: Plan, name: str):
    """A copy of the original model that its user may change (``Context.base``): a copy of the cached one, or
    while a method trains, the original loaded anew (nobody else's: no second copy)."""
    from relearnbench.models import copy_model

    if _base_key(p, name) in _TRAINING:
        return base_model(p, name)
    return copy_model(base_model(p, name))


@contextlib.contextmanager
def without_original(p: Plan, name: str):
    """While a method trains the harness holds no original of ``name``: its recipe holds the trained copy, and a
    teacher's own frozen copy where it has one (ESD, SPM), so the cached original would be one UNet more (3.2 GB of
    SD-1.4's in float32; the largest paper-sd14 cell's recipe holds six). It is loaded again, as every worker loads
    it, when the harness next needs it; a training image the original generates meanwhile comes from a fresh load."""
    from relearnbench.memory import release_freed

    key = _base_key(p, name)
    _BASE.pop(key, None)
    _TRAINING.add(key)
    release_freed()  # the modules' reference cycles and the heap's freed pages go now, before the method allocates
    try:
        yield
    finally:
        _TRAINING.discard(key)


def context(p: Plan, model_name: str, concept: str, seed: int, artifacts: Artifacts, progress=None) -> Context:
    scale = p.scales[model_name]
    base = (lambda: original_copy(p, model_name)) if p.needs_model else None
    return Context(device=p.spec.device, dtype=p.spec.dtype, seed=seed, judge=p.judges.get((concept, scale)),
                   base=base, artifacts=artifacts, progress=progress, sample_config=p.sample[scale],
                   generate_config=p.generate[scale], checkpointing=p.unlearn.checkpointing,
                   optimizer_state=p.unlearn.optimizer_state)


def evaluate_stage(p: Plan, model, concept_name: str, ctx: Context, stage: str, cell: dict,
                   forget_prompts=None, only: set | None = None, images=None) -> list[Record]:
    from relearnbench.evaluate import Evaluation

    ev = Evaluation(model, p.concepts[concept_name], ctx, stage, forget_prompts, images)
    ev.cell = cell
    scores: list[Score] = []
    with measure(p.spec.device) as used:
        for name, metric in zip(p.spec.metrics, p.metrics(cell["model"])):
            if only is None or name in only:
                scores += metric.compute(ev)
    grid, rows = ev.contact_sheet()  # one PNG per evaluated stage, for the report
    sheet = {}
    if grid is not None and ctx.artifacts is not None:
        png = ctx.artifacts.save_png("images", digest({**cell, "stage": stage}), grid)
        sheet = {"images": ctx.artifacts.relative(png), "sheet": rows}
    for s in scores:
        s.info = {**s.info, "sample_seconds": round(ev.sample_seconds, 3), **sheet}
    for s in scores:
        if not math.isfinite(s.value):
            raise FloatingPointError(f"metric {s.metric} is {s.value} at stage {stage}")
    return [Record(stage, s.metric, float(s.value), s.lo, s.hi, s.n, eval_seconds=used["seconds"],
                   eval_peak_mb=used["peak_mb"], eval_reserved_mb=used["reserved_mb"], info=s.info) for s in scores]


def unlearn_key(p: Plan, model: str, concept: str, method: str, seed: int) -> str:
    return digest({"model": model, "model_config": dataclasses.asdict(p.model_config),
                   "fingerprint": _fingerprint(p, model), "concept": p.concepts[concept].sha256,
                   "method": method, "plugin": p.method(method, model).describe(), "seed": seed,
                   "device": p.spec.device, "dtype": p.spec.dtype,
                   "generated": p.generate[p.scales[model]].generation(),  # a method's generated training images
                   # AdamW's moments in bfloat16 or 8 bits change the numbers: in the key only when set
                   **({"optimizer_state": p.unlearn.optimizer_state} if p.unlearn.optimizer_state != "float32" else {})})


def _fingerprint(p: Plan, model: str) -> str:
    return base_model(p, model).fingerprint if p.needs_model else model


def pre_key(p: Plan, ukey: str, model: str, concept: str) -> str:
    scale = p.scales[model]
    judge = p.judges.get((concept, scale))
    return digest({"unlearn": ukey, "sample": dataclasses.asdict(p.sample[scale]),
                   "metrics": [m.describe() for m in p.metrics(model)],
                   "judge": judge.describe() if judge else None})


def unlearn_job(spec: Spec, artifacts: Artifacts, model: str, concept: str, method: str, seed: int,
                progress=None) -> tuple[str, list[Record], dict]:
    """Unlearn once (cached by content hash) and evaluate the unlearned model once (cached too).
    Returns the unlearned artifact key, the ``pre`` records and the artifacts used (path -> sha256)."""
    p = cached_plan(spec)
    art = Artifacts(artifacts.root)  # this job's own record of the files it reads and writes (``used``)
    ukey = unlearn_key(p, model, concept, method, seed)
    pkey = pre_key(p, ukey, model, concept)
    cached = art.load_json("eval", pkey)
    if cached is not None:
        return ukey, [Record(**r) for r in cached], art.used
    ctx = context(p, model, concept, seed, art, progress)
    unlearned, stats = _unlearned(p, art, ctx, ukey, model, concept, method, seed)
    seed_everything(seeds.of(seed, "unlearn"))
    records = evaluate_stage(p, unlearned, concept, ctx, "pre",
                             {"model": model, "concept": concept, "method": method, "seed": seed})
    for r in records:  # the stage that made this model: the unlearning (its first run's, when cached)
        r.seconds, r.peak_mb, r.reserved_mb = stats["seconds"], stats["peak_mb"], stats.get("reserved_mb", 0.0)
    art.save_json("eval", pkey, [dataclasses.asdict(r) for r in records])
    return ukey, records, art.used


def _unlearned(p: Plan, art: Artifacts, ctx: Context, ukey: str, model: str, concept: str, method: str, seed: int):
    """The unlearned model, from the cache (when its files are there and intact) or by running the method."""
    plugin = p.method(method, model)
    stats = art.load_json("unlearn", ukey)
    if stats is not None and not p.needs_model:
        return None, stats
    saved = load_unlearned(art, ukey, stats, p.spec.device) if stats is not None else None
    if saved is not None:
        from relearnbench.models import copy_model

        return copy_model(base_model(p, model), *saved), stats
    m = ctx.base() if p.needs_model else None
    seed_everything(seeds.of(seed, "unlearn"))
    with without_original(p, model) if m is not None else contextlib.nullcontext(), \
            measure(p.spec.device) as measured:
        plugin.unlearn(m, p.concepts[concept], ctx)
    encoders = {}
    if m is not None:
        from relearnbench.models import changed_encoders

        state = m.unet.state_dict()
        encoders = changed_encoders(m, base_model(p, model))  # a trained text encoder goes beside the UNet
        bad = [k for part in (state, *encoders.values()) for k, v in part.items()
               if v.is_floating_point() and not bool(v.isfinite().all())]
        if bad:
            raise FloatingPointError(f"{method} produced non-finite weights (first: {bad[0]}); "
                                     f"lower its learning rate (--set {plugin.config_name}.lr=...)")
        art.save_tensors("unlearn", ukey, state)
        for name, encoder in encoders.items():
            art.save_tensors("unlearn", unlearned_keys(ukey, [name])[1], encoder)
    if stats is None:  # weights recomputed after damage keep the first run's stats, which cells already used
        stats = measured
        # the text encoders saved beside the UNet, named only when there are any (a UNet-only file stays as it was)
        art.save_json("unlearn", ukey, {**stats, "method": method, "plugin": plugin.describe(),
                                        **({"text_encoders": sorted(encoders)} if encoders else {})})
    return m, stats


def unlearned_keys(ukey: str, encoders: list[str]) -> list[str]:
    """The artifact keys of an unlearned model: ``KEY`` (its UNet), then ``KEY.text_encoder`` (``.text_encoder_2``)
    for each text encoder it trained."""
    return [ukey, *(f"{ukey}.{name}" for name in encoders)]


def load_unlearned(art: Artifacts, ukey: str, stats: dict, device) -> tuple[dict, dict] | None:
    """(UNet state, {text encoder: state}) of a cached unlearned model (``unlearned_keys``: the text encoders its
    ``stats`` name as trained); None when a file is absent or damaged."""
    names = stats.get("text_encoders", [])
    states = []
    for key in unlearned_keys(ukey, names):
        states.append(art.load_tensors("unlearn", key, device=device))
        if states[-1] is None:
            return None
    return states[0], dict(zip(names, states[1:]))


def attack_job(spec: Spec, artifacts: Artifacts, cell: tuple, ukey: str, pre: list[Record],
               progress=None) -> tuple[list[Record], dict]:
    """Attack a fresh copy of the unlearned model and evaluate it along the relearning curve.
    Returns the records and the artifacts used (path -> sha256)."""
    model_name, concept, method, attack_name, seed = cell
    p = cached_plan(spec)
    art = Artifacts(artifacts.root)  # this job's own record of the files it reads and writes (``used``)
    ctx = context(p, model_name, concept, seed, art, progress)
    m, _ = _unlearned(p, art, ctx, ukey, model_name, concept, method, seed)  # recomputed if its file was damaged
    records = [dataclasses.replace(r) for r in pre]
    attack = p.attack(attack_name, model_name)
    cell_dict = dict(zip(("model", "concept", "method", "attack", "seed"), cell))
    t_attack = [0.0]
    curve: list[list[Record]] = []

    def evaluate(step=None, forget_prompts=None, final=True, images=None):
        """Score the model as it is now. Intermediate curve points (``final=False``) score only the
        metrics registered with ``curve=True`` (ASR): FID and CLIP need many images, the curve is about ASR.
        ``images``: forget images a probe made itself, scored instead of sampling the forget prompts."""
        stage = "post" if step is None else f"post@{step}"
        t_attack[0] += time.perf_counter() - t_mark[0]  # training time only, evaluation excluded
        if step == 0 and forget_prompts is None and images is None:  # not evaluated again
            recs = [dataclasses.replace(r, stage=stage, eval_seconds=0.0, eval_peak_mb=0.0, eval_reserved_mb=0.0)
                    for r in pre]
        else:
            only = None if final else p.curve_metrics
            recs = evaluate_stage(p, m, concept, ctx, stage, cell_dict, forget_prompts, only, images)
        if not final:
            recs = [r for r in recs if r.metric.split(".")[0] in p.curve_metrics]
        for r in recs:
            r.seconds = t_attack[0]
        curve.append(recs)
        t_mark[0] = time.perf_counter()

    t_mark = [time.perf_counter()]
    with measure(spec.device) as stats:
        run_attack(attack, m, p.concepts[concept], ctx, evaluate)
    if not curve:
        raise RuntimeError(f"attack {attack_name} never called evaluate()")
    for recs in curve:
        for r in recs:  # the attack's own peak: its evaluations inside it have theirs (eval_peak_mb)
            r.peak_mb, r.reserved_mb = stats["peak_mb"], stats["reserved_mb"]
        records += recs
    if curve[-1][0].stage != "post":
        records += [dataclasses.replace(r, stage="post") for r in curve[-1]]
    return records, art.used


def cell_config(p: Plan, cell: tuple) -> dict:
    model, concept, method, attack, seed = cell
    scale = p.scales[model]
    judge = p.judges.get((concept, scale))
    return {"cell": dict(zip(("model", "concept", "method", "attack", "seed"), cell)),
            "model_config": dataclasses.asdict(p.model_config), "concept": p.concepts[concept].source,
            "concept_sha256": p.concepts[concept].sha256, "roles": p.concepts[concept].role_hashes(),
            "sample": dataclasses.asdict(p.sample[scale]), "generate": dataclasses.asdict(p.generate[scale]),
            "method": p.method(method, model).describe(), "attack": p.attack(attack, model).describe(),
            "metrics": {m: x.describe() for m, x in zip(p.spec.metrics, p.metrics(model))},
            "judge": judge.describe() if judge else None, "device": p.spec.device, "dtype": p.spec.dtype}


def failure_message(exc: BaseException) -> str:
    msg = f"{type(exc).__name__}: {exc}"
    if "out of memory" in str(exc).lower():
        msg += " (hint: lower the batch size with --set PLUGIN.batch_size=N or sample.batch_size=N)"
    return msg


@dataclass
class Outcome:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list = field(default_factory=list)


def write_result(store: Store, p: Plan, cell: tuple, records, exc: BaseException | None, outcome: Outcome,
                 artifacts: dict | None = None):
    cfg = cell_config(p, cell)
    if exc is None:
        store.write_cell(cell, records, status="done", config=cfg, config_hash=digest(cfg), versions=versions(),
                         artifacts=artifacts)
        outcome.done += 1
    else:
        tb = "".join(traceback.format_exception(exc))
        store.write_cell(cell, [], status="failed", config=cfg, config_hash=digest(cfg), versions=versions(),
                         error=failure_message(exc), traceback=tb)
        outcome.failed += 1
        outcome.failures.append((cell, failure_message(exc)))


def pending(spec: Spec, store: Store, retry_failed: bool) -> list[tuple]:
    """The cells to run: new ones, failed ones with ``retry_failed``, and finished ones that lack a metric
    this run asks for (rerun whole: the unlearned model is cached, the attack and evaluations run again)."""
    statuses, configs = store.statuses(), store.configs()
    todo = []
    for cell in spec.cells():
        st = statuses.get(cell)
        lacking = st == "done" and set(spec.metrics) - set(configs.get(cell, {}).get("metrics", spec.metrics))
        if (st == "done" and not lacking) or (st == "failed" and not retry_failed):
            continue
        todo.append(cell)
    return todo


def groups(todo: list[tuple]) -> dict[tuple, list[tuple]]:
    """The cells to run by unlearning job, (model, concept, method, seed) -> its attack cells, wrapped
    methods first: a wrapper (``esd+meta``) does its base's work and more, so starting the longest jobs
    first keeps ``--jobs`` workers and Ray tasks from idling behind one long job at the end of a grid."""
    out: dict[tuple, list[tuple]] = {}
    for cell in todo:
        out.setdefault((cell[0], cell[1], cell[2], cell[4]), []).append(cell)
    return dict(sorted(out.items(), key=lambda item: -item[0][2].count("+")))  # stable: grid order otherwise


def check_finished(spec: Spec, store: Store) -> None:
    """Refuse to resume into a run directory whose finished cells were run with other settings than
    this run's: they would be skipped, and their numbers would stand in the table as this run's."""
    stored, p = store.configs(), cached_plan(spec)
    for cell in spec.cells():
        if cell in stored:
            why = setting_changed(stored[cell], json.loads(json.dumps(cell_config(p, cell), default=str)))
            if why:
                raise UserError(f"{store.dir} holds cell {'/'.join(map(str, cell))} finished with other settings "
                                f"({why}); rerun into a new --out directory, or pass --keep-changed to keep "
                                "those cells as they are")


# what decides a finished cell's numbers (not the device it ran on, nor the path of its concept file)
DETERMINING = ("model_config", "concept_sha256", "sample", "generate", "method", "attack", "judge", "dtype")


def setting_changed(old: dict, new: dict) -> str:
    """The first setting that decides a cell's numbers and differs between two cell configurations
    (as ``"method.config.lr: 0.0001 -> 0.0002"``), or "" when none does. A key only one of them has
    is not compared: a metric added to the run, or a config field added since (a field whose default
    changes what a plugin does comes with a new plugin ``version``, which is compared)."""
    pairs = [(k, old.get(k), new.get(k)) for k in DETERMINING]
    shared = sorted(set(old.get("metrics", {})) & set(new.get("metrics", {})))
    pairs += [(f"metrics.{m}", old["metrics"][m], new["metrics"][m]) for m in shared]
    return next((d for d in (_difference(*pair) for pair in pairs) if d), "")


def _difference(path: str, a, b) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        return next((d for d in (_difference(f"{path}.{k}", a[k], b[k]) for k in sorted(set(a) & set(b))) if d), "")
    return "" if a == b else f"{path}: {a} -> {b}"
