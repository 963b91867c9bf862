#!/usr/bin/env bash
# GPU readiness check for lightning-bert: run it whenever a GPU is available, and paste its output
# into the README's GPU section. About 5-8 minutes on one H100 (BERT-base, sequence 128):
#   1. environment: torch, CUDA, device, its bf16 peak from lightning_bert/train/flops.py
#   2. SDPA: the attention kernel that actually runs (flash / efficient / cudnn / math) for packed
#      batches (no mask) and padded pair batches (bool mask), and which backends can run each
#   3. padding share of NSP/SOP pair batches on real text (> 10%: bucketing or varlen attention pays)
#   4. batch sweep of BERT-base bf16 raw-loop steps: batch 64/128/256/512 at sequence 128 and 32 at 512;
#      eager / layers compiled / whole step compiled, fused AdamW on and off; tokens/s, MFU, peak memory
#      (capped at 5 minutes: configurations past it print "skipped")
#   5. train.py end to end with trainer.precision=bf16-mixed, trainer.compile=false/true: status,
#      finite loss, logged train/tokens_per_sec and train/mfu
#   6. train.py at the sweep's best setting against the raw loop there: the loop overhead on the GPU
#
#   bash benchmarks/gpu_check.sh                 # on a GPU machine
#   bash benchmarks/gpu_check.sh --cpu-dry-run   # tiny sizes on CPU: checks the script, measures nothing
# Outputs (runs, caches) go under $OUT (default /tmp/gpu_check).
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=disabled
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, not an installed copy
DRY=()
if [[ "${1:-}" == "--cpu-dry-run" ]]; then DRY=(--cpu-dry-run); fi
if [[ ${#DRY[@]} -eq 0 ]] && ! python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "no CUDA device visible to torch; use --cpu-dry-run to check the script" >&2
  exit 1
fi
if [[ ${#DRY[@]} -eq 0 ]] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi
for section in env sdpa padding sweep train overhead; do
  echo "== $section"
  python benchmarks/gpu_check.py "$section" "${DRY[@]}"
done
