"""Every op inside tf.function, with and without jit_compile=True (XLA), in a
fresh process whose first use of unibackend is the compiled call: answers
equal to eager, bad ids and indices fail with the contract's message.

Each case runs in a subprocess (the bugs this pins depended on what an
earlier eager call had cached); the child prints one JSON line per op.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tensorflow")

CHILD = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    import tensorflow as tf
    import unibackend as ub
    from unibackend.conformance import tolerances as T

    jit = sys.argv[1] == "1"
    ub.set_backend("tensorflow")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    x[0, 2] = np.nan; x[1, :3] = x[1, 4]; x[2, 0] = -np.inf; x[3, 5] = np.inf
    m = rng.random((4, 6)) > 0.4
    table = rng.normal(size=(7, 3)).astype(np.float32)
    table[0] = np.nan  # the pad row: never read
    ids = np.array([[1, 2, 0, 2], [0, 0, 0, 0], [6, 5, 4, 0]])
    sp = tf.sparse.from_dense(tf.constant(np.where(m, np.nan_to_num(x), 0).astype(np.float32)))
    w = rng.normal(size=(6, 2)).astype(np.float32)
    cases = {
        "dot": (lambda a, b: ub.dot(a, b), (np.nan_to_num(x), w)),
        "sparse_dot": (lambda b: ub.sparse_dot(sp, b), (w,)),
        "argsort": (lambda a: ub.argsort(a, descending=True), (x,)),
        "set_subtensor": (lambda a, i: ub.set_subtensor(a, i, 5.0), (x, np.array([0, 2, 0]))),
        "inc_subtensor": (lambda a, i: ub.inc_subtensor(a, (slice(None), i), 1.0), (x, np.array([-1, 3, 3]))),
        "set_subtensor_slice": (lambda a: ub.set_subtensor(a, (slice(1, 3), 2), 5.0), (x,)),
        "masked_mean": (lambda a, mm: ub.masked_mean(a, mm, axis=1), (x, m)),
        "keep_topk": (lambda a: ub.keep_topk(a, 2), (x,)),
        "softmax": (lambda a: ub.softmax(a), (x,)),
        "topk_gate": (lambda a: ub.topk_gate(a, 2), (x,)),
        "embedding_mean": (lambda t, i: ub.embedding_mean(t, i), (table, ids)),
    }
    # compiled first: nothing eager has run in this process
    got = {}
    for name, (f, args) in cases.items():
        got[name] = tf.function(f, jit_compile=jit)(*[tf.constant(a) for a in args]).numpy()
    for name, (f, args) in cases.items():
        want = ub.to_numpy(f(*[tf.constant(a) for a in args]))
        g = got[name]
        print(json.dumps({"op": name, "dtype_ok": g.dtype == want.dtype, "shape_ok": g.shape == want.shape,
                          "nan_ok": bool((np.isnan(g) == np.isnan(want)).all()) if g.dtype.kind == "f" else True,
                          "close": bool(np.allclose(g, want, rtol=T.rtol_for(g.dtype) if g.dtype.kind == "f" else 0,
                                                    atol=T.floor(g.dtype) if g.dtype.kind == "f" else 0,
                                                    equal_nan=True))}))

    # bad values inside the compiled graph
    def outcome(f, *args):
        try:
            out = tf.function(f, jit_compile=jit)(*args).numpy()
            return {"raised": None, "nan": bool(np.isnan(out).all(axis=-1).any())}
        except Exception as e:
            return {"raised": type(e).__name__, "msg": getattr(e, "message", str(e))}

    t, xx = tf.constant(np.ones((5, 2))), tf.constant(np.zeros((3, 4)))
    bad = {
        "ids": outcome(lambda a, i: ub.embedding_mean(a, i), t, tf.constant([[1, 9, 0], [0, 0, 0]])),
        "index": outcome(lambda a, i: ub.set_subtensor(a, i, 1.0), xx, tf.constant([0, 7])),
        "neg_index": outcome(lambda a, i: ub.inc_subtensor(a, (slice(None), i), 1.0), xx, tf.constant([-9, 1])),
    }
    try:
        ub.function(lambda a, i: ub.embedding_mean(a, i))(t, tf.constant([[1, 9, 0], [0, 0, 0]]))
        bad["ub_function"] = {"raised": None}
    except Exception as e:
        bad["ub_function"] = {"raised": type(e).__name__, "msg": str(e)}
    print(json.dumps({"bad": bad}))
""")


def _run(jit):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", CHILD, "1" if jit else "0"], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    ops = {d["op"]: d for d in lines if "op" in d}
    (bad,) = [d["bad"] for d in lines if "bad" in d]
    return ops, bad


@pytest.fixture(scope="module", params=[False, True], ids=["graph", "xla"])
def fresh(request):
    return request.param, _run(request.param)


def test_every_op_compiled_first_in_a_fresh_process_equals_eager(fresh):
    """With the compiled call the first use of unibackend, each op's graph
    (plain or XLA) gives eager's dtype, shape, NaN pattern and values."""
    _, (ops, _) = fresh
    assert len(ops) == 11
    for name, d in ops.items():
        assert d["dtype_ok"] and d["shape_ok"] and d["nan_ok"] and d["close"], (name, d)


def test_bad_ids_and_indices_fail_the_graph_or_poison_the_xla_result(fresh):
    """A plain graph fails with tf.errors.InvalidArgumentError carrying the
    contract's message and the bad value; ub.function turns it into
    IndexError.  XLA keeps no runtime assert: the result is NaN instead
    (never a read outside the table or x)."""
    jit, (_, bad) = fresh
    assert bad["ub_function"] == {
        "raised": "IndexError",
        "msg": "embedding_mean: id 9 is out of range for a table of 5 rows (valid: 0..4, pad_id=0)"}
    if jit:
        for case in ("ids", "index", "neg_index"):
            assert bad[case] == {"raised": None, "nan": True}, (case, bad[case])
        return
    for case, msg in [("ids", "embedding_mean: id 9 is out of range for a table of 5 rows (valid: 0..4, pad_id=0)"),
                      ("index", "set_subtensor: index 7 is out of bounds for axis 0 with size 3"),
                      ("neg_index", "inc_subtensor: index -9 is out of bounds for axis 1 with size 4")]:
        assert bad[case]["raised"] == "InvalidArgumentError", (case, bad[case])
        assert "[unibackend IndexError] " + msg in bad[case]["msg"], (case, bad[case])
