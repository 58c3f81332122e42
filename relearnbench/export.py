"""``relearnbench export``: a cell's unlearned model (or the attacked one) as a diffusers pipeline folder
that ``StableDiffusionPipeline.from_pretrained`` loads, with a model card.

The unlearned UNet is the run's cached artifact, put back into the run's base model, with the text encoder
the method trained when it trained one (``advunlearn``: the pipeline's ``text_encoder/``). The attacked
model is not cached (a grid of SD cells would hold gigabytes per cell), so ``--stage post`` reruns
the cell's attack on the unlearned model, seeded as the run seeded it, and keeps the model as it is
at the attack's last evaluation: the model the cell's ``post`` scores were measured on. A LoRA attack
is written merged into the UNet, or as the unlearned pipeline plus its adapter
(``pytorch_lora_weights.safetensors``, for ``pipe.load_lora_weights``).

``README.md`` is a Hugging Face model card: YAML metadata (``library_name``, ``tags``, ``base_model``,
``model-index`` with the cell's scores, and a ``relearnbench`` block with the method's resolved settings and
the run's provenance), then the scores with their 95 % intervals in a table.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pathlib

from relearnbench.errors import UserError
from relearnbench.store import CELL_KEYS, Store

HUB_IDS = {"sd14": "CompVis/stable-diffusion-v1-4", "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5"}


def find_cell(store: Store, given: dict, stage: str) -> tuple:
    """The one finished cell matching ``given`` (model, concept, method, attack, seed; None = any).
    For ``pre`` any attack's cell will do: they share the unlearned model."""
    done = [c for c, st in store.statuses().items() if st == "done"]
    match = [c for c in done if all(v is None or str(c[i]) == str(v) for i, v in enumerate(given.values()))]
    if stage == "pre" and given["attack"] is None:
        match = list({c[:3] + (None, c[4]): c for c in match}.values())  # one per unlearned model
    if len(match) != 1:
        wanted = "/".join("*" if v is None else str(v) for v in given.values())
        found = ", ".join("/".join(map(str, c)) for c in match[:4]) or "none"
        how = "name it with --cell MODEL/CONCEPT/METHOD/ATTACK/SEED or narrow --method/--concept/--seed/--attack" \
            if match else "relearnbench table --long lists them"
        raise UserError(f"{store.dir}: {len(match)} finished cells match {wanted} ({found}); {how}")
    return match[0]


def parse_cell(text: str) -> dict:
    parts = text.split("/")
    if len(parts) != len(CELL_KEYS):
        raise UserError(f"--cell {text}: expected MODEL/CONCEPT/METHOD/ATTACK/SEED, as `relearnbench table --long` prints")
    return dict(zip(CELL_KEYS, parts))


def export(run_dir: str, given: dict, out: str, stage: str = "pre", lora: str = "merged") -> pathlib.Path:
    from relearnbench.registry import load_plugin
    from relearnbench.runner import (base_model, cached_plan, cell_config, context, load_unlearned, setting_changed,
                                     unlearn_key, unlearned_keys)
    from relearnbench.spec import Spec

    store = Store(run_dir, create=False)
    out_dir = pathlib.Path(out)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"--out {out_dir} exists and is not empty; export into a new folder")
    cell = find_cell(store, given, stage)
    model_name, concept, method, attack, seed = cell
    cell = (model_name, concept, method, attack, int(seed))
    # the run directory keeps the spec of its last `run`; the cell may come from an earlier one
    last = Spec(**store.get_meta("spec"))
    spec = dataclasses.replace(last, **{f"{k}s": list(dict.fromkeys([*getattr(last, f"{k}s"), v]))
                                        for k, v in zip(CELL_KEYS, cell)})
    for module in spec.plugins:
        load_plugin(module)
    p = cached_plan(spec)
    stored = store.configs()[cell]
    why = setting_changed(stored, json.loads(json.dumps(cell_config(p, cell), default=str)))
    if why:
        raise UserError(f"cell {'/'.join(map(str, cell))} was run with other settings than its plugins and files "
                        f"now resolve to ({why}); its model cannot be rebuilt as it was")
    # the unlearned model the cell's numbers came from, by the key it was stored under: the key code computes
    # today may differ for a cell run by older code (a new field in it), though the settings are the same
    used = [path for path in store.artifacts_used(cell)  # the UNet's file: KEY.safetensors (KEY.text_encoder... beside)
            if path.startswith("unlearn/") and path.endswith(".safetensors") and "." not in pathlib.PurePath(path).stem]
    ukey = pathlib.PurePath(used[0]).stem if used else unlearn_key(p, model_name, concept, method, cell[4])
    art = store.artifacts
    stats = art.load_json("unlearn", ukey) or {}
    saved = load_unlearned(art, ukey, stats, spec.device)  # None when a file is absent or damaged
    if saved is None:
        files = ", ".join(f"{key}.safetensors" for key in unlearned_keys(ukey, stats.get("text_encoders", [])))
        raise UserError(f"the unlearned model of {'/'.join(map(str, cell))} is not in {art.root / 'unlearn'} "
                        f"(expected {files}, intact); rerun the cell into this run directory")
    from relearnbench.models import copy_model

    model = copy_model(base_model(p, model_name), *saved)  # its trained text encoder too (advunlearn)
    attacked = {}
    if stage == "post":
        ctx = context(p, model_name, concept, cell[4], art)
        attacked = rerun_attack(p.attack(attack, model_name), model, p.concepts[concept], ctx)
    written_lora = write_pipeline(model, attacked, out_dir, lora)
    keys = dict(zip(CELL_KEYS, cell))
    if stage == "pre":  # the unlearned model, which every attack cell of it starts from: no attack's cell
        keys["attack"] = None
    records, cells = store.records_frame(), store.cells_frame()
    rows = records[(records[list(CELL_KEYS)] == list(cell)).all(axis=1) & (records["stage"] == stage)]
    row = cells[(cells[list(CELL_KEYS)] == list(cell)).all(axis=1)].iloc[0]
    provenance = {"run": str(store.dir.resolve()), "cell": keys, "stage": stage, "unlearned_artifact": ukey,
                  "config_hash": row["config_hash"], "versions": json.loads(row["versions"] or "{}"),
                  "pipeline": "StableDiffusionXLPipeline" if model.text_encoder_2 is not None else "StableDiffusionPipeline"}
    if stage == "post":
        provenance.update(attack_step=attacked["step"], lora=written_lora)
    (out_dir / "README.md").write_text(model_card(keys, stage, stored, rows.to_dict("records"), provenance,
                                                  attacked.get("prompts")))
    return out_dir


def rerun_attack(attack, model, concept, ctx) -> dict:
    """Run ``attack`` again as the harness ran it (``runner.run_attack``: the same seeds) and keep the model at
    its last evaluation."""
    from relearnbench.runner import run_attack

    kept: dict = {}

    def evaluate(step=None, forget_prompts=None, final=True, images=None):  # a probe's images: its model is unchanged
        if final:
            kept.update(unet=copy.deepcopy(model.unet), text_encoder=copy.deepcopy(model.text_encoder),
                        tokenizer=copy.deepcopy(model.tokenizer), text_encoder_2=copy.deepcopy(model.text_encoder_2),
                        tokenizer_2=copy.deepcopy(model.tokenizer_2), step=step,
                        prompts=[p.text for p in forget_prompts] if forget_prompts is not None else None)

    run_attack(attack, model, concept, ctx, evaluate)
    if not kept:
        raise UserError(f"attack {attack.config_name} never evaluated its final model; nothing to export")
    return kept


def write_pipeline(model, attacked: dict, out_dir: pathlib.Path, lora: str) -> str | None:
    """Save the pipeline; returns how a LoRA attack's adapter was written ("merged", "adapter"), or None."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    unet, adapter, written = attacked.get("unet", model.unet), None, None
    if getattr(unet, "peft_config", None):  # a LoRA attack: its adapter is still attached
        written = lora
        if lora == "merged":
            unet.fuse_lora()
            unet.unload_lora()  # the plain layers back, holding the merged weights
        else:
            from peft.utils import get_peft_model_state_dict

            (name,) = unet.peft_config
            adapter = get_peft_model_state_dict(unet, adapter_name=name)
            unet = model.unet  # the unlearned UNet; the adapter goes beside it
    # the harness samples with DDIM built from the model's training schedule: ship that sampler
    # the text encoders the attack left (concept inversion adds a word to each), else the model's
    encoders = {k: attacked.get(k, getattr(model, k)) for k in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")}
    if model.text_encoder_2 is not None:  # SDXL; "" as the unconditional prompt, as relearnbench sampled it
        cls, extra = StableDiffusionXLPipeline, dict(force_zeros_for_empty_prompt=False, add_watermarker=False)
    else:
        cls, extra = StableDiffusionPipeline, dict(safety_checker=None, feature_extractor=None,
                                                    requires_safety_checker=False)
        del encoders["text_encoder_2"], encoders["tokenizer_2"]
    pipe = cls(vae=model.vae, unet=unet, scheduler=DDIMScheduler.from_config(model.scheduler.config), **encoders,
               **extra)
    from relearnbench.progress import no_transformers_bars

    with no_transformers_bars():
        pipe.save_pretrained(out_dir)
    if adapter is not None:
        cls.save_lora_weights(out_dir, unet_lora_layers=adapter)
    return written


def model_card(cell: dict, stage: str, config: dict, records: list[dict], provenance: dict,
               prompts: list[str] | None = None) -> str:
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    concept, method = cell["concept"], cell["method"]
    attacked_by = f" after the attack {cell['attack']}" if stage == "post" else ""
    title = f"{method}: {cell['model']} with '{concept}' erased{attacked_by}"
    results = [EvalResult(task_type="text-to-image", dataset_type="relearnbench-concept", dataset_name=concept,
                          metric_type=r["metric"], metric_value=r["value"], metric_name=f"{r['metric']} ({stage})",
                          metric_args=_finite({"lo": r["lo"], "hi": r["hi"], "n": int(r["n"])})) for r in records]
    data = ModelCardData(library_name="diffusers", pipeline_tag="text-to-image",
                         base_model=HUB_IDS.get(cell["model"]), model_name=title, eval_results=results,
                         tags=["relearnbench", "concept-unlearning", method.partition("@")[0].partition("+")[0]],
                         relearnbench=_finite({"method": config.get("method"), "concept": {
                             "name": concept, "file": config.get("concept"), "sha256": config.get("concept_sha256")},
                             "model": cell["model"], "model_config": config.get("model_config"),
                             "attack": config.get("attack") if stage == "post" else None,
                             "sample": config.get("sample"), "judge": config.get("judge"), "provenance": provenance}))
    if stage == "pre":
        what = (f"the unlearned model of `{cell['model']}/{concept}/{method}`, seed {cell['seed']} (stage `pre`: "
                "before any attack; every attack cell of it starts from this model and records these scores)")
    else:
        what = f"cell `{'/'.join(str(cell[k]) for k in CELL_KEYS)}`, stage `{stage}`"
    lines = [f"# {title}", "",
             f"Exported by `relearnbench export` from the run `{provenance['run']}`, {what}.", "",
             "```python", f"from diffusers import {provenance.get('pipeline', 'StableDiffusionPipeline')}",
             f"pipe = {provenance.get('pipeline', 'StableDiffusionPipeline')}.from_pretrained(\"PATH\")"]
    if provenance.get("lora") == "adapter":
        lines += ["pipe.load_lora_weights(\"PATH\")  # the attack's LoRA adapter"]
    lines += ["```", "", f"Scores at stage `{stage}` (95 % interval; n = images or prompts averaged):", "",
              "| metric | value | interval | n |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['metric']} | {r['value']:.4g} | {_interval(r)} | {int(r['n'])} |" for r in records]
    if prompts:
        lines += ["", "The attack's final prompts:", ""] + [f"- `{t}`" for t in prompts]
    lines += ["", "The method's resolved settings, the concept file's hash, the sampler, the judge and the run's "
              "provenance are in the `relearnbench` block of this card's metadata.", ""]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def _finite(obj):
    """``obj`` with every NaN float as None: YAML metadata has no NaN (FID has no interval, say)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _interval(r: dict) -> str:
    lo, hi = r.get("lo"), r.get("hi")
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return ""
    return f"[{lo:.4g}, {hi:.4g}]"


