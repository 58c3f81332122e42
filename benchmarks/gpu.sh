#!/usr/bin/env bash
# The GPU figures in one prepared run (benchmarks/README.md): a meta outer step vs an ESD step on the
# full-size SD-1.4 architecture with random weights (bf16 frozen parts, the paper's batch), and sampling
# throughput at 512 px, and UnlearnDiffAtk's evaluation pass (142 prompts, 50 LMS steps, bf16, batched) against
# the UNet's FLOP bound (benchmarks/eval_pass.py). Expects relearnbench installed (a wheel in .whl/ on the device machine).
set -uo pipefail
export PYTHONUNBUFFERED=1

python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
python3 benchmarks/sampling.py --model sd14-random --device cuda --dtype bf16 --steps 50 --batch 8 --images 32
python3 benchmarks/methods.py --model sd14-random --device cuda --dtype bf16 --steps 2,5 --orders 1
python3 benchmarks/eval_pass.py --model sd14-random --device cuda --dtype bf16 --prompts 142 --steps 50 --batch 16

# SDXL (issue 32), the paper's second scale: the full-size SDXL architecture with random weights at 1024 px (no SDXL
# weights on the device machine; the zero-shot judge and the CLIP score use the shipped toy CLIP, ViT-L-14 is absent).
# Sampling and UnlearnDiffAtk's evaluation pass as above; ESD's step at its published SDXL settings (esd.toml [sdxl])
# against meta's at [sd14]'s batch 10 (out of memory below ~205 GB, printed); then a short paper-sdxl run through the
# harness, one concept: esd-u-1 (5 of its 200 steps) x none, ft (5 steps at batch 1: [sdxl.ft]'s batch 10 needs
# ~181 GB by the memory model), and esd-u-1+meta (2 steps, ~122 GB with unlearn.checkpointing) on a card of 130 GiB
# or more. `table --timing` prints each stage's seconds and GB beside the memory model's `--dry-run` estimate.
python3 benchmarks/sampling.py --model sdxl-random --device cuda --dtype bf16 --steps 50 --batch 4 --images 8
python3 benchmarks/eval_pass.py --model sdxl-random --device cuda --dtype bf16 --prompts 24 --steps 50 --batch 8
python3 benchmarks/methods.py --model sdxl-random --device cuda --dtype bf16 --steps 2,5 --orders 1
gib=$(( $(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1) / 1024 ))
sdxl=(--grid paper-sdxl --model sdxl-random --concepts spongebob --attacks none,ft --set esd.steps=5
      --set ft.curve=0,5 --set ft.batch_size=1 --set unlearn.checkpointing=true --set clip.model=toy
      --set clip_zeroshot.model=toy --out /tmp/runs/paper-sdxl-short)
if [ "$gib" -ge 130 ]; then sdxl+=(--methods esd-u-1,esd-u-1+meta --set meta.steps=2); else sdxl+=(--methods esd-u-1); fi
relearnbench run "${sdxl[@]}" --dry-run | tail -8
relearnbench run "${sdxl[@]}" --quiet
relearnbench table --timing /tmp/runs/paper-sdxl-short
