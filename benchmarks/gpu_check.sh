#!/usr/bin/env bash
# The GPU figures of issue 6 in one call on a lent machine (about 6 minutes):
#   here:   bash benchmarks/gpu_wheels.sh
#   device: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
# Everything it prints is also written to $OUT/gpu_check.log.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider --import-mode=importlib \
      tests/data/test_augment.py tests/training/test_gpu.py
  timeout 240 python3 benchmarks/train_step.py --device cuda --presets sigmarat2 --iterations 10
  timeout 120 python3 benchmarks/generate_speed.py --device cuda --presets sigmarat2 --n 256 \
      --naive-n 8 --batch-sizes 8 32 --precisions bf16
} 2>&1 | tee "$OUT/gpu_check.log"
