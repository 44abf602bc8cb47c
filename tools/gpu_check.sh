#!/usr/bin/env bash
# One device check, sized for one device-tool call (about 8 minutes; GPU_CHECK_BUDGET_S, default 480):
#   issue 11 first: host syncs per op in the sync-free mode, sync-free ratios against native,
#   embedding_mean under torch.compile as a fraction of the copy bandwidth, compile times
#   (tools/gpu_figures.py); the CUDA sync tests; the compiled conformance on CUDA;
#   then the earlier checks: tie order and bad input on CUDA, torch plugin tests on CUDA,
#   eager conformance numpy-vs-torch on CUDA, quick bench on CUDA;
#   last, if time is left, the compiled conformance of a few ops with Inductor.
# Each step gets min(its own limit, what is left of the budget); a step that cannot start is
# listed as skipped. Run from the repository root on a GPU machine with a wheel of this
# package in .whl/ (here: `pip wheel --no-deps -w .whl .`; `.whl` is git-ignored, so name it
# in the device call's carry) and $OUT set to a folder for the results, e.g.
#   run(command="bash tools/gpu_check.sh", carry=[".whl"], timeout_s=560)
# Back in $OUT (8 files, the device tool's limit): summary.txt, syncs.txt, gpu_figures.txt,
# gpu_figures.json, conformance_compiled_cuda.md, conformance_cuda.md, bench.tgz, logs.tgz.
set -u
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg XLA_PYTHON_CLIENT_PREALLOCATE=false
REPO=$(pwd)
OUT=${OUT:?set OUT to the results folder}
BUDGET=${GPU_CHECK_BUDGET_S:-480}
COMPILER=${GPU_CHECK_COMPILER:-aot_eager}   # the full compiled conformance (Inductor: too many graphs for the budget)
DEV=${GPU_CHECK_DEVICE:-cuda}               # cpu: a dry run of the plumbing (small sizes), not a measurement
PY=${PYTHON:-python3}
WORK=${GPU_CHECK_TMP:-/tmp/gpu_check}       # installed wheel, copied tests, bench output
LOG=$OUT/logs
mkdir -p "$LOG"
START=$SECONDS

# step NAME MAX_S CMD...: run CMD under timeout min(MAX_S, budget left - 15 s); skipped under 20 s.
step() {
  local name=$1 max=$2; shift 2
  local left=$(( BUDGET - (SECONDS - START) - 15 ))
  local lim=$(( max < left ? max : left ))
  if (( lim < 20 )); then
    echo "$name: skipped, ${left}s of the budget left" >> "$LOG/steps.txt"
    return 99
  fi
  local t0=$SECONDS
  timeout -k 5 "$lim" "$@"
  local rc=$?
  local why=""; (( rc == 124 || rc == 137 )) && why=" (TIMED OUT at ${lim}s)"
  echo "$name: rc $rc, $(( SECONDS - t0 ))s of ${lim}s${why}" >> "$LOG/steps.txt"   # not to stdout: a step's stdout is its log
  return $rc
}

rm -rf "$WORK" && mkdir -p "$WORK"
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl || exit 1
export PYTHONPATH=$WORK/site
{ nvidia-smi -L && nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu,clocks.sm,clocks.mem --format=csv; } > "$LOG/env.txt" 2>&1
$PY -c "import torch, numpy, scipy, hypothesis; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'hyp', hypothesis.__version__)" | tee -a "$LOG/env.txt"
BACKENDS=numpy,torch
if $PY -c "import jax; assert jax.devices('$DEV')" >> "$LOG/env.txt" 2>&1; then
  BACKENDS=numpy,torch,jax
  $PY -c "import jax; print('jax', jax.__version__, jax.devices('$DEV'))" >> "$LOG/env.txt" 2>&1
fi
echo "backends for the conformance: $BACKENDS; budget ${BUDGET}s" | tee -a "$LOG/env.txt"
mkdir -p "$WORK/t" && cp -r "$REPO/tests" "$WORK/t/"   # the tests run against the installed wheel
cd "$WORK"
FIG_ARGS=(--device "$DEV" --out "$OUT" --budget-s 200)
[ "$DEV" = cpu ] && FIG_ARGS+=(--small --gpu-paths)

step ties 60 $PY - <<'PY' > "$LOG/ties.txt" 2>&1
import torch, numpy as np, unibackend as ub
x = torch.zeros(40, device="cuda"); x[[3, 17, 30]] = 1
print("native torch.topk on cuda:", torch.topk(x, 2).indices.tolist())
print("ub.keep_topk kept on cuda:", torch.isfinite(ub.keep_topk(x, 2)).nonzero().flatten().tolist(), "device", ub.keep_topk(x, 2).device)
xc = x.cpu(); print("native torch.topk on cpu:", torch.topk(xc, 2).indices.tolist())
try:
    ub.set_subtensor(torch.zeros(5, device="cuda"), torch.tensor([7], device="cuda"), 1.0)
except Exception as e:
    print("oob index on cuda ->", type(e).__name__, e)
try:
    ub.embedding_mean(torch.ones(5, 2, device="cuda"), torch.tensor([[1, 9]], device="cuda"))
except Exception as e:
    print("oob id on cuda ->", type(e).__name__, e)
with ub.use_backend("torch", device="cuda"):
    y = ub.dot(np.ones((2, 3)), np.ones(3)); print("neutral input under device=cuda ->", y.device)
PY
cat "$LOG/ties.txt"

# issue 11: syncs per op, sync-free ratios, compiled bandwidth fraction, compile times, bad input
step gpu_figures 240 $PY "$REPO/tools/gpu_figures.py" "${FIG_ARGS[@]}" > "$LOG/gpu_figures.log" 2>&1
step pytest_sync 90 $PY -m pytest -q -p no:cacheprovider --tb=short -rs "$WORK/t/tests/test_compiled_torch.py" -k sync > "$LOG/pytest_sync.txt" 2>&1
tail -4 "$LOG/pytest_sync.txt"
UNIBACKEND_TORCH_COMPILER=$COMPILER step conformance_compiled 180 $PY -m unibackend conformance --compiled --quiet \
  --backends "$BACKENDS" --device "$DEV" --report "$OUT/conformance_compiled_cuda.md" > "$LOG/conformance_compiled.txt" 2>&1
tail -3 "$LOG/conformance_compiled.txt"

# the earlier checks
(cd "$WORK/t" && step pytest_cuda 150 $PY -m pytest -q -p no:cacheprovider --tb=short tests/test_torch_backend.py tests/test_errors.py > "$LOG/pytest_cuda.txt" 2>&1)
tail -3 "$LOG/pytest_cuda.txt"
step conformance_eager 120 $PY -m unibackend conformance --quiet --backends numpy,torch --device "$DEV" --report "$OUT/conformance_cuda.md" > "$LOG/conformance_eager.txt" 2>&1
tail -2 "$LOG/conformance_eager.txt"
step bench 150 $PY -m unibackend bench --quick --device "$DEV" --backends numpy,torch --out "$WORK/bench" > "$LOG/bench_log.txt" 2>&1
[ -d "$WORK/bench" ] && tar czf "$OUT/bench.tgz" -C "$WORK" bench

# with what is left: the compiled conformance of the ops with device-only graph paths, under Inductor
UNIBACKEND_TORCH_COMPILER=inductor step conformance_inductor 150 $PY -m unibackend conformance --compiled --quiet \
  --backends numpy,torch --device "$DEV" --ops keep_topk,topk_gate,embedding_mean,set_subtensor,inc_subtensor \
  --report "$LOG/conformance_compiled_inductor_cuda.md" > "$LOG/conformance_inductor.txt" 2>&1

{
  echo "==== gpu_check summary ($(( SECONDS - START ))s of a ${BUDGET}s budget) ===="
  cat "$LOG/env.txt"
  echo; cat "$LOG/steps.txt"
  echo; cat "$OUT/gpu_figures.txt" 2>/dev/null || { echo "gpu_figures gave no summary; its log ends:"; tail -20 "$LOG/gpu_figures.log"; }
  echo; echo "-- pytest tests/test_compiled_torch.py -k sync (the CUDA sync-count test):"; grep -E "passed|failed|error|SKIP" "$LOG/pytest_sync.txt" | tail -4
  for f in conformance_compiled conformance_eager conformance_inductor; do
    echo "-- $f:"; grep -E "passed|failed|time per backend" "$LOG/$f.txt" 2>/dev/null | tail -2
  done
  echo "-- pytest torch_backend + errors on $DEV:"; grep -E "passed|failed|error" "$LOG/pytest_cuda.txt" 2>/dev/null | tail -1
  echo "-- ties and bad input on $DEV:"; tail -6 "$LOG/ties.txt"
  echo "-- bench, torch rows of keep_topk and embedding_mean:"
  grep -E "(keep_topk|embedding_mean).*torch" "$LOG/bench_log.txt" 2>/dev/null | head -12
} > "$OUT/summary.txt" 2>&1
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOG"
cat "$OUT/summary.txt"
ls "$OUT"
