"""The checks a run passes before any cell starts or any run directory exists: the device and dtype,
the model's files, every weight file a judge or metric will load, concepts that fit the model, and each
plugin's own settings (``Plugin.preflight``). Every problem is found, then all are reported in one block,
so that a run never fails cell after cell on something that was wrong from the start."""

from __future__ import annotations

from relearnbench.errors import UserError
from relearnbench.spec import DTYPES


def preflight(p) -> None:
    """Raise one UserError listing every problem of the plan ``p`` (relearnbench.runner.Plan)."""
    spec = p.spec
    problems = [] if spec.executor == "ray" else device_problems(spec.device, spec.dtype, spec.gpus)
    if p.needs_model:
        from relearnbench.models import missing_files

        for model in spec.models:
            problems += missing_files(model, p.model_config)
            problems += [fit for c in p.concepts.values() if (fit := concept_fit(model, c))]
    for (kind, name, scale), plugin in p.plugins.items():
        for c, concept in p.concepts.items():
            problems += plugin.preflight(concept, p.judges.get((c, scale)))
    for (c, scale), judge in p.judges.items():
        problems += judge.preflight(p.concepts[c], judge)
    problems = list(dict.fromkeys(problems))  # a file several plugins need is named once
    if problems:
        raise UserError(f"the run cannot start ({len(problems)} problem{'s' * (len(problems) > 1)}; "
                        "nothing was run or written):\n" + "\n".join(f"  - {x}" for x in problems))
    if p.needs_model and spec.executor != "ray":  # a cell the memory model says will not fit: warn, run anyway
        import sys

        from relearnbench.memory import preflight_warnings

        for warning in preflight_warnings(p):
            print(f"warning: {warning}", file=sys.stderr, flush=True)


def device_problems(device: str, dtype: str, gpus: str = "") -> list[str]:
    dtype = DTYPES.get(dtype, dtype)
    if device == "cpu" and dtype != "float16":
        return []  # no torch import for the common case
    import torch

    try:
        d = torch.device(device)
    except RuntimeError:
        return [f"--device {device}: not a torch device (cpu, cuda, cuda:1, mps)"]
    out = []
    if d.type == "cuda":
        n = torch.cuda.device_count()
        wanted = [int(g) for g in gpus.split(",") if g.strip()] if gpus else [d.index or 0]
        if n == 0:
            out.append(f"--device {device}: this machine has no CUDA GPU (torch {torch.__version__}, "
                       f"built for CUDA {torch.version.cuda or 'none'}, sees 0 devices); use --device cpu")
        elif max(wanted) >= n:
            out.append(f"--device {device}{f' --gpus {gpus}' if gpus else ''}: this machine has {n} CUDA "
                       f"device{'s' * (n > 1)} (cuda:0..cuda:{n - 1})")
        elif dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            out.append(f"--dtype bf16: {torch.cuda.get_device_name(d)} has no bfloat16; use --dtype fp16")
    elif d.type == "mps" and not torch.backends.mps.is_available():
        out.append(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif d.type not in ("cpu", "cuda", "mps"):
        out.append(f"--device {device}: relearnbench runs on cpu, cuda or mps")
    if dtype == "float16" and d.type == "cpu":
        out.append("--dtype fp16 on the CPU: half-precision kernels are missing or slow there; use "
                   "--device cuda, or --dtype bf16 (or float32) on the CPU")
    return out


def concept_fit(model: str, concept) -> str:
    """Why ``concept`` cannot be measured on ``model``, or "": a toy-world concept (toy judge, world
    images) needs the toy model, an SD concept a real Stable Diffusion model; the random-weight test
    models (tiny, sd14-random) take either."""
    from relearnbench.models import model_world

    world = model_world(model)
    toy_concept = concept.judge == "toy" or "world" in (concept.attack_data, concept.fid_reference)
    if world == "sd" and toy_concept:
        return (f"concept {concept.name} belongs to the toy world (judge {concept.judge}, 32x32 shapes) but model "
                f"{model} is Stable Diffusion: pick an SD concept (relearnbench ls concepts: church, nudity, ...)")
    if world == "toy" and not toy_concept:
        return (f"concept {concept.name} is a Stable Diffusion concept (judge {concept.judge}) but model {model} "
                "is the toy world's: use --model sd14 (or a diffusers folder), or a toy concept (triangle, striped)")
    return ""
