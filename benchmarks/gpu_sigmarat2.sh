#!/usr/bin/env bash
# The paper's `sigmarat2` at full width on a lent GPU, its quality against held-out scans of the
# built-in cohort (both feature spaces), and the GPU speed figures, in one call (about 9 min):
#   here:   bash benchmarks/gpu_wheels.sh
#   device: run(command="bash benchmarks/gpu_sigmarat2.sh", carry=[".whl"], timeout_s=590)
# With .gpu_data/held (held-out scans with labels made here, sub-064..127 of the cohort) and
# .gpu_data/cache (RATGAN_CACHE with the anatomy network fitted on them) carried too, the
# evaluation neither depends on the device's numerics reproducing the cohort bit for bit nor
# refits the anatomy network there.  TRAIN_S (default 300) bounds the training's wall time
# (SIGTERM: the trainer saves a checkpoint and stops); DEVICE=cpu BASE=tiny TRAIN_S=30 tries the
# script on a CPU.  The gpu tests and the train_step benchmark repeat benchmarks/gpu_check.sh's
# first steps, so that one loan gives both.  Everything printed is
# also written to $OUT/log; $OUT gets metrics.jsonl, the quality-vs-compute CSV and figure, and
# a montage of the last checkpoint's scans.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
W=${W:-/tmp/gpu_work}
TRAIN_S=${TRAIN_S:-300}
DEVICE=${DEVICE:-cuda}
BASE=${BASE:-sigmarat2}
mkdir -p "$OUT" "$W"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1
START=$(date +%s)
stamp() { echo "== $1 at $(($(date +%s) - START)) s"; }
{
  stamp start
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"

  stamp cohort  # 128 subjects, seed 0: sub-000..063 train, sub-064..127 held out
  python3 -m ratgan phantom --out "$W/cohort" --subjects 128 --seed 0 --no-progress
  if [ -d .gpu_data/cache ]; then export RATGAN_CACHE=$PWD/.gpu_data/cache; fi
  for part in train held; do mkdir -p "$W/$part/images" "$W/$part/labels"; done
  for i in $(seq 0 127); do
    part=train; [ "$i" -ge 64 ] && part=held
    name=$(printf "sub-%03d.nii.gz" "$i")
    mv "$W/cohort/images/$name" "$W/$part/images/" && mv "$W/cohort/labels/$name" "$W/$part/labels/"
  done
  if [ -d .gpu_data/held/images ]; then rm -rf "$W/held"; cp -r .gpu_data/held "$W/held"; fi

  if [ "$DEVICE" = cuda ]; then
    stamp gpu-tests
    timeout 90 python3 -m pytest -q -m gpu -p no:cacheprovider --import-mode=importlib \
        tests/data/test_augment.py tests/training/test_gpu.py
    stamp train-step
    timeout 100 python3 benchmarks/train_step.py --device cuda --presets sigmarat2 --iterations 10
  fi

  stamp train
  cat > "$W/s2gpu.yaml" << EOF
base: $BASE
name: $BASE-gpu
train: {iterations: 200000, checkpoint_every: 1000, keep_checkpoints: 1000, eval_every: 1000,
        sample_every: 1000}
EOF
  timeout -s TERM -k 60 "$TRAIN_S" python3 -m ratgan train --config "$W/s2gpu.yaml" \
      --data "$W/train/images" --eval-real "$W/held/images" --out "$W/r/s2gpu" \
      --device "$DEVICE" --precision bf16 --no-progress
  cp "$W/r/s2gpu/metrics.jsonl" "$OUT/" || true
  ls "$W/r/s2gpu/checkpoints" || true

  stamp quality  # about 4 checkpoints, the last always, in what is left of 540 s
  n_ckpt=$(ls "$W/r/s2gpu/checkpoints" | grep -c '^ckpt_')
  every=$(((n_ckpt + 3) / 4))
  left=$((540 - ($(date +%s) - START)))
  timeout $((left > 60 ? left : 60)) python3 benchmarks/quality_vs_compute.py "$W/r/s2gpu" --real "$W/held" \
      --out "$W/qvc" --n 64 --threads 16 --device "$DEVICE" --every "$((every > 0 ? every : 1))"
  cp "$W/qvc/quality_vs_compute.csv" "$W/qvc/quality_vs_compute.png" "$OUT/" || true
  (cd "$W/qvc" && tar czf "$OUT/qvc_reports.tgz" eval/*/metrics.json eval/*/report.md) || true

  stamp montage
  python3 -m ratgan generate "$W/r/s2gpu" --n 8 --out "$W/gen8" --seed 0 --device "$DEVICE" \
      --no-progress
  python3 -m ratgan show "$W"/gen8/*.nii.gz --out "$OUT/s2gpu_montage.png"
  stamp end
} 2>&1 | tee "$OUT/log"
