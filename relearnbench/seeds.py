"""Every seed a cell derives from its own seed, by purpose: ``seeds.of(seed, "attack")``.

One table, so that two purposes never draw the same stream by accident and a reader sees every derivation at
once. Each purpose keeps the derivation its call site used before this table existed (``+ 1``, ``* 7 + 3``,
``+ 7919``, ...), so every cached artifact and every record stays bit for bit what it was; a new purpose
takes a new row, and changing a row changes the numbers of every run that uses it.
"""

from __future__ import annotations

from typing import Callable

DERIVATIONS: dict[str, Callable[..., int]] = {
    # the harness (relearnbench.runner): the global RNGs before each stage of a cell
    "unlearn": lambda s: s,  # the method's run, and the evaluation of its model (stage pre)
    "attack": lambda s: s + 1,  # the attack's run and its evaluations (runner.run_attack; export reruns it)
    # images the original model generates as training data (relearnbench.data), from the caller's data seed
    "generated-images": lambda s: s + 10_000,
    # the evaluation's images (relearnbench.evaluate): one stream per prompt set, so adding a prompt to one
    # set leaves the others alone
    "eval-forget": lambda s: s * 7,
    "eval-related": lambda s: s * 7 + 1,
    "eval-unrelated": lambda s: s * 7 + 2,
    "eval-benign": lambda s: s * 7 + 3,
    "eval-prompt-file": lambda s: s * 7 + 5,  # prompts outside the concept (a FID caption file)
    # the sampler's base seed of prompt i that has no seed of its own (diffusion.image_jobs; UnlearnDiffAtk)
    "prompt": lambda s, i: s * 100_003 + i,
    # methods' own training data and draws
    "salun-retain-data": lambda s: s + 1,
    "retain-data": lambda s: s + 1,  # EraseDiff's and ScissorHands' retain images: SalUn's, the same train benign set
    "meta": lambda s: s + 7919,  # the meta wrapper's generator: timesteps, noise, batches
    "meta-forget-data": lambda s: s + 100,
    "meta-related-data": lambda s: s + 101,
    "meta-unrelated-data": lambda s: s + 102,
    # the gradients metric: its own seed (from its data_seed setting), and from that seed the noise of batch b
    # at timestep t (forget and retain batches share it); its images use that seed + 1 (forget), + 2 (retain)
    "gradients": lambda s, data_seed: s * 1009 + data_seed,
    "gradients-noise": lambda s, t, b: s * 7919 + t * 31 + b,
}


def of(seed: int, purpose: str, *index: int) -> int:
    """The seed for ``purpose`` in a cell of seed ``seed``; ``index``: the purpose's own indices (``prompt``: the
    prompt's position; ``gradients-noise``: timestep and batch)."""
    try:
        derive = DERIVATIONS[purpose]
    except KeyError:
        raise ValueError(f"no seed purpose {purpose!r}; known: {', '.join(DERIVATIONS)}") from None
    return derive(seed, *index)
