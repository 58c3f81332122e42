"""``relearnbench run --dry-run``: every cell of a grid and the settings each will run with, each value
beside where it comes from (a ``--set``, the registry entry, a preset table and its ``# published`` or
``# ours`` comment, or the plugin's default), before any weight is loaded. Check a ``paper-sd14`` run
here before spending GPU hours on it."""

from __future__ import annotations

import dataclasses

from relearnbench.config import scale_chain
from relearnbench.errors import UserError
from relearnbench.provenance import source_of

PLACEHOLDER = "<the prompt CSV: --set concept.prompts=FILE.csv>"


def _origin(cls, scale: str, key: str, sets: dict, entry: dict, namespace: str, extra_tables=(), reached=()):
    """(where the value comes from, its provenance comment or None). ``reached``: a wrapper's keys that its
    base's ``--set`` reached (``config.reaching``), as ``(key, base namespace)``."""
    if key in sets.get(namespace, {}):
        return f"--set {namespace}.{key}", None
    for k, base_ns in reached:
        if k == key:
            return f"--set {base_ns}.{key} (a wrapper follows its base's --set)", None
    if key in (entry or {}):
        return "the registry entry", None
    found = source_of(cls, [t for s in scale_chain(scale) for t in (s, f"{s}.{namespace}")] + list(extra_tables), key)
    return found if found else ("the plugin's default", None)


def _settings(cls, config, scale: str, sets: dict, entry: dict, extra_tables=(), reached=()) -> list[str]:
    """One line per key (value <- source (n)), then each distinct provenance comment once as (n)."""
    namespace = getattr(cls, "config_name", "")
    lines, notes = [], []
    for f in dataclasses.fields(config):
        where, comment = _origin(cls, scale, f.name, sets, entry, namespace, extra_tables, reached)
        if comment and comment not in notes:
            notes.append(comment)
        mark = f" ({notes.index(comment) + 1})" if comment else ""
        lines.append(f"      {f.name} = {getattr(config, f.name)!r}    <- {where}{mark}")
    return lines + [f"        ({i}) {n}" for i, n in enumerate(notes, 1)]


def _plugin_lines(kind: str, name: str, plugin, scale: str, sets: dict) -> list[str]:
    from relearnbench.registry import REGISTRIES

    entry = REGISTRIES[kind].meta(name.partition("+")[0]).get("preset") or {}
    base = getattr(plugin, "base", None)
    if base is None:
        return [f"  {kind[:-1]} {name} [{scale}] (version {plugin.version})",
                *_settings(type(plugin), plugin.config, scale, sets, entry)]
    from relearnbench.config import reaching

    reached = [(k, base.config_name) for k in reaching(type(plugin), base, sets, plugin.config)]
    out = [f"  method {name} [{scale}]: {type(base).__name__} (version {base.version}) "
           f"+ {plugin.suffix} (version {plugin.version})",
           *_settings(type(base), base.config, scale, sets, entry),
           *_settings(type(plugin), plugin.config, scale, sets, REGISTRIES[kind].wrapper(plugin.suffix)[1].get("fixed"),
                      extra_tables=[f"{s}.{base.config_name}" for s in scale_chain(scale)], reached=reached)]
    if hasattr(plugin, "gammas"):
        out.append(f"      weights in effect: {plugin.gammas()}    <- preset {plugin.config.preset!r} "
                   "(methods/meta.toml [presets]) unless set above")
    return out


def describe_plan(spec) -> str:
    """The text of ``--dry-run``: resolves everything ``relearnbench run`` would, loads no weight."""
    from relearnbench.data import GenerateConfig
    from relearnbench.evaluate import SampleConfig
    from relearnbench.runner import plan

    lines, notes = [], []
    try:
        p = plan(spec)
    except UserError as e:
        if "concept.prompts" not in str(e):
            raise
        # a prompt-CSV concept planned before its CSV is at hand: say so, and plan the rest
        notes.append(f"  note: {e}; the plan below stands in a placeholder for its prompts")
        spec = dataclasses.replace(spec, sets={**spec.sets, "concept": {**spec.sets.get("concept", {}),
                                                                        "forget_prompts": [PLACEHOLDER]}})
        p = plan(spec)
    cells = list(spec.cells())
    lines.append(f"grid {spec.name}: {len(cells)} cells = {len(spec.models)} models x {len(spec.concepts)} concepts"
                 f" x {len(spec.methods)} methods x {len(spec.attacks)} attacks x {len(spec.seeds)} seeds; "
                 f"device {spec.device}, dtype {spec.dtype}, executor {spec.executor}")
    lines += notes
    lines += [f"attack {a} runs only on {', '.join(ms)} (the grid's [only])" for a, ms in spec.only.items()]
    lines.append("cells (model / concept / method / attack / seed):")
    lines += [f"  {'/'.join(map(str, c))}" for c in cells]
    for c, concept in p.concepts.items():
        seeds = sum(q.seed is not None for q in concept.forget)
        lines.append(f"concept {c}: {len(concept.forget)} forget prompts ({seeds} with a file seed), "
                     f"{len(concept.related)} related, {len(concept.unrelated)} unrelated; judge {concept.judge} "
                     f"{concept.judge_config or ''}; from {concept.source}")
    for scale in sorted(set(p.scales.values())):
        models = [m for m, s in p.scales.items() if s == scale]
        lines.append(f"settings at the {scale} presets (models {', '.join(models)}):")
        sample = p.sample[scale]
        lines.append("  sample (every metric's images)")
        lines += _settings(SampleConfig, sample, scale, spec.sets, {})
        for c, concept in p.concepts.items():
            lines.append(f"    concept {c}: forget prompts sampled with {sample.sampler_for(concept.forget)}")
        lines.append("  generate (training images the original model samples: train_data / attack_data \"generate\")")
        lines += _settings(GenerateConfig, p.generate[scale], scale, spec.sets, {})
        for kind, names in (("methods", spec.methods), ("attacks", spec.attacks), ("metrics", spec.metrics)):
            for name in names:
                lines += _plugin_lines(kind, name, p.plugins[(kind, name, scale)], scale, spec.sets)
        for (c, s), judge in p.judges.items():
            if s == scale:
                lines.append(f"  judge of {c}: {judge.info()}")
    if p.needs_model:
        from relearnbench.memory import estimate_lines

        lines += estimate_lines(p)
    lines.append("nothing was loaded or run (--dry-run)")
    return "\n".join(lines) + "\n"
