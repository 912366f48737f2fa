#!/usr/bin/env bash
# The GPU check (issue 30): what this trainer does on a CUDA machine. Not part of the test suite.
#   bash scripts/gpu_check.sh            (after bash scripts/setup.sh; OUT=<folder> for the run folders)
# 1. the default job on one GPU, with its wall time;
# 2. Box Pushing with 4096 games stepped on the GPU: env-only agent-steps/s (1 to 4096 games), then
#    collection and end-to-end with 4096 games;
#    VMAS (balance) the same way: env-only up to 4096 games, then collection and end-to-end with 4096;
# 3. a 2-GPU DDP run where two GPUs exist;
# 4. resume on the GPU: a run killed (SIGKILL) and resumed twice must end bitwise equal to the same run
#    uninterrupted (scripts/crash_loop.py), or the check says where it differs.
# Prints each figure; exits 2 without running anything where no CUDA device is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$GPUS" -lt 1 ]; then
  echo "gpu_check: no CUDA device visible (torch.cuda.is_available() is False); nothing was run" >&2
  exit 2
fi
"$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'x', torch.cuda.device_count(), '| torch', torch.__version__)"

echo "== 1. the default job on one GPU (trainer=gpu device=cuda)"
start=$(date +%s.%N)
"$PY" train.py trainer=gpu device=cuda trainer.enable_progress_bar=false hydra.run.dir="$OUT/default" | tail -n 2
echo "wall: $(echo "$(date +%s.%N) - $start" | bc) s (whole process, setup excluded)"

echo "== 2. Box Pushing on the GPU: env-only, then 4096 games collecting and training"
"$PY" scripts/benchmark.py env=box_pushing device=cuda --env-only 1 64 1024 4096 --seconds 4
"$PY" scripts/benchmark.py env=box_pushing device=cuda trainer=gpu data.num_envs=4096 data.batch_size=512 \
    data.buffer_size=20000 data.warmup_episodes=4096 eval.num_envs=512 --seconds 5 --budget 2000000

echo "== 2b. VMAS (balance) on the GPU: env-only, then 4096 games collecting and training"
"$PY" scripts/benchmark.py env=vmas device=cuda --env-only 1 64 1024 4096 --seconds 4
"$PY" scripts/benchmark.py env=vmas device=cuda trainer=gpu data.num_envs=4096 data.batch_size=512 \
    data.buffer_size=20000 data.warmup_episodes=4096 eval.num_envs=512 --seconds 5 --budget 2000000

if [ "$GPUS" -ge 2 ]; then
  echo "== 3. DDP on 2 GPUs (trainer=ddp trainer.accelerator=gpu trainer.devices=2)"
  start=$(date +%s.%N)
  "$PY" train.py trainer=ddp trainer.accelerator=gpu trainer.devices=2 device=cuda total_env_steps=50000 \
      trainer.enable_progress_bar=false hydra.run.dir="$OUT/ddp" | tail -n 2
  echo "wall: $(echo "$(date +%s.%N) - $start" | bc) s"
else
  echo "== 3. DDP on 2 GPUs: skipped, $GPUS GPU visible"
fi

echo "== 4. resume on the GPU (SIGKILL twice, resume, compare with the uninterrupted run)"
"$PY" scripts/crash_loop.py --kills 2 --budget 20000 --min-wait 8 --max-wait 15 device=cuda trainer=gpu
echo "gpu_check: run folders in $OUT"
