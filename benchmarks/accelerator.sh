#!/usr/bin/env bash
# QERNEL's side of benchmarks/peer.py on an accelerator, in one prepared run.
#
# Usage: bash benchmarks/accelerator.sh OUTDIR [BUDGET_S]
#
# Runs from the repository root with the machine's python3 (JAX with its GPU
# plugin already installed); packages the machine lacks may lie as wheels in
# .whl/ (installed into /tmp/site). In order of importance, each part with its
# own time limit inside BUDGET_S (default 540 s), each writing its JSON as it goes:
#   1. run.py at N = 6, 24, 54 (moire-tiny, moire24, moire54; reference model,
#      the peer's 256 walkers and 10 sweeps per step, log ψ and QERNEL's
#      Laplacian timed on 256 walkers; folx left out): the step, launch to
#      first step, memory. run.py's own per-preset limit stops a preset, never
#      run.py, so its JSON is always written;
#   2. components.py at N = 6 and 24 with 256 step walkers and 256 walkers
#      per per-walker program: the step taken apart;
#   3. the derivative and determinant tests on the accelerator (pytest).
# Compilation dominates on a GPU (H200, 2026-12-04: 75–85 s from launch to the
# first step, each part of components.py 1–40 s), so the three parts take
# about 4, 4 and 2 minutes.
set -uo pipefail
OUT=${1:?usage: accelerator.sh OUTDIR [BUDGET_S]}
BUDGET=${2:-540}
mkdir -p "$OUT"
START=$SECONDS
left() { echo $(( BUDGET - (SECONDS - START) )); }
limit() { local l; l=$(left); (( l < $1 )) && echo "$l" || echo "$1"; }

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  python3 -c 'import jax, jaxlib, equinox, optax, folx, zarr, sys; print(sys.version); print(jax.devices()); print({m.__name__: m.__version__ for m in (jax, jaxlib, equinox, optax, folx, zarr)})' 2>&1
  nproc
} >"$OUT/env.txt"
cat "$OUT/env.txt"

echo "== 1. run.py ($(left) s left)"
timeout "$(limit 330)" python3 benchmarks/run.py --json --out "$OUT/run-gpu.json" --steps 5 --walkers 256 \
  --forward-walkers 256 --laplacian-walkers 256 --timeout 105 --skip-folx --skip-hessian-above 0 \
  --set sampler.steps_per_iteration=10 --preset moire-tiny --preset moire24 --preset moire54 >/dev/null 2>"$OUT/run.log"
echo "run.py: rc $? ($(left) s left)"; tail -5 "$OUT/run.log"

echo "== 2. components.py ($(left) s left)"
timeout "$(limit 200)" python3 benchmarks/components.py --cases 6 24 --step-walkers 256 --batch 256 \
  --out "$OUT/components-gpu.json" 2>"$OUT/components.log"
echo "components.py: rc $? ($(left) s left)"; tail -3 "$OUT/components.log"

echo "== 3. tests ($(left) s left)"
if (( $(left) > 30 )); then
  timeout "$(limit 120)" python3 -m pytest -q -x -p no:cacheprovider tests/test_head_laplacian.py tests/test_linalg.py \
    tests/test_jet.py >"$OUT/pytest.txt" 2>&1
  echo "pytest: rc $?"; tail -3 "$OUT/pytest.txt"
fi
echo "done in $((SECONDS - START)) s"
