#!/usr/bin/env bash
# paramtx's GPU check, in one command: the test suite on CUDA, then the W1-W3 and perturbed
# benchmarks on CUDA. About 6 minutes on one H200; each part has its own time limit, so the
# whole stays within 8.
#
# Run from anywhere:   bash benchmarks/gpu_check.sh [OUT_DIR]      (default OUT_DIR: /tmp/paramtx-gpu)
# It writes OUT_DIR/tests.log and OUT_DIR/bench.md, and exits non-zero if a part failed.
#
# The machine needs CUDA, PyTorch, numpy, pytest and hypothesis; no network. Nothing is
# installed system-wide: this checkout goes on PYTHONPATH. optree, paramtx's one other
# dependency, travels as a wheel in .whl/ (which git must ignore). On a machine with
# network, in the repository root, for that machine's Python (here 3.12):
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl optree==0.20.0
#
# (optree needs typing-extensions, which PyTorch brings.) This script installs .whl/*.whl, if
# any, into a folder of its own. Tests that need a package the machine lacks (rai-toolbox for
# the parity tests, mypy) are skipped; every other test runs on cuda (PARAMTX_TEST_DEVICE), the
# two-process DTensor/DDP tests on gloo.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-/tmp/paramtx-gpu}"
mkdir -p "$OUT_DIR"
PYTHON="${PYTHON:-python3}"

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/paramtx-site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/paramtx-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1

"$PYTHON" -c "import torch, optree, paramtx; assert torch.cuda.is_available(), 'no CUDA device'; \
print('paramtx', paramtx.__version__, '| torch', torch.__version__, '|', torch.cuda.get_device_name())" || exit 1

status=0
echo "== the test suite on cuda"
PARAMTX_TEST_DEVICE=cuda timeout 300 "$PYTHON" -m pytest -q -p no:cacheprovider -rs tests paramtx 2>&1 \
    | tee "$OUT_DIR/tests.log" | tail -n 40
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== W1-W3 and the perturbed optimizers on cuda"
timeout 150 "$PYTHON" benchmarks/bench_device.py --device cuda --quick 2>&1 | tee "$OUT_DIR/bench.md"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

exit $status
