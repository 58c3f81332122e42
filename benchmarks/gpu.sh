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
