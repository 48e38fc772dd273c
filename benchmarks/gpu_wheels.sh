#!/usr/bin/env bash
# Download the wheels that the lent GPU machine lacks (nibabel, MONAI) into .whl/, for
# benchmarks/gpu_check.sh.  Run here, in the repository root, before the device call;
# .whl/ is git-ignored through .git/info/exclude and travels with `carry: [".whl"]`.
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "nibabel==5.4.2" "monai==1.6.1"
ls -la .whl
