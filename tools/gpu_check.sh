#!/usr/bin/env bash
# One device check: torch plugin tests on CUDA, conformance numpy-vs-torch on CUDA, quick bench on CUDA.
# Run from the repository root on a GPU machine with a wheel of this package in .whl/
# (pip wheel --no-deps -w .whl .) and $OUT set to a folder for the results.
set -u
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
REPO=$(pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
nvidia-smi -L
python3 -c "import torch, numpy, scipy, hypothesis; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'hyp', hypothesis.__version__)"
cd /tmp && python3 - <<'PY' 2>&1 | tee $OUT/ties.txt
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
mkdir -p /tmp/t && cp -r $REPO/tests /tmp/t/ && cd /tmp/t
timeout 240 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_torch_backend.py tests/test_errors.py > $OUT/pytest_cuda.txt 2>&1; tail -15 $OUT/pytest_cuda.txt
cd /tmp
timeout 150 python3 -m unibackend conformance --backends numpy,torch --device cuda --report $OUT/conformance_cuda.md 2>&1 | tail -8
timeout 150 python3 -m unibackend bench --quick --device cuda --backends numpy,torch --out /tmp/bench > $OUT/bench_log.txt 2>&1; grep -E "keep_topk|embedding_mean|sparse_dot|dispatch" $OUT/bench_log.txt | head -40; tar czf $OUT/bench.tgz -C /tmp bench
ls -R $OUT
