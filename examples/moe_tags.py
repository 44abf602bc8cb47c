"""Train a top-k-gated mixture of experts on sparse bag-of-words + tags, on
any autodiff backend, save it to one .npz, and serve it anywhere (numpy too).

    python examples/moe_tags.py --backend torch --epochs 5 --save moe.npz
    python examples/moe_tags.py --backend numpy --predict moe.npz
    unibackend export-onnx moe.npz moe.onnx
    python examples/moe_tags.py --predict moe.onnx   # ONNX Runtime + numpy only

The data are synthetic, generated from a fixed seed: each document has a
topic (seen, noisily, in its 10,000-feature bag of words, ~0.5% nonzero)
and a style (seen, noisily, in its short list of tags); the class is the
(topic, style) pair, so the model needs both inputs.  The tags are averaged
through EmbeddingMean, both inputs are projected into a hidden layer that
feeds a mixture of E=8 experts gated top-2, then a class softmax.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import unibackend as ub
from unibackend import nn

FEATURES = 10_000
WORDS_PER_DOC = 50          # 0.5% of 10,000
TOPICS, STYLES = 4, 2       # classes = topics x styles
TAG_VOCAB = 300
TOPIC_WORDS = 400           # words each topic favours
SIGNAL = 0.12               # share of a document's words that come from its topic
TAG_SIGNAL = 0.5            # share of a document's tags that come from its style


def make_data(n, seed):
    """(bow CSR float32 (n, FEATURES), padded tag ids (n, L), labels (n,))."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    world = np.random.default_rng(1234)  # the topics and styles, the same in every split
    topic_words = world.choice(FEATURES, size=(TOPICS, TOPIC_WORDS), replace=False)
    style_tags = world.permutation(TAG_VOCAB)[: STYLES * 40].reshape(STYLES, 40)
    topic = rng.integers(TOPICS, size=n)
    style = rng.integers(STYLES, size=n)
    from_topic = rng.random((n, WORDS_PER_DOC)) < SIGNAL
    words = np.where(from_topic,
                     topic_words[topic[:, None], rng.integers(TOPIC_WORDS, size=(n, WORDS_PER_DOC))],
                     rng.integers(FEATURES, size=(n, WORDS_PER_DOC)))
    rows = np.repeat(np.arange(n), WORDS_PER_DOC)
    bow = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, words.ravel())), shape=(n, FEATURES))
    bow.sum_duplicates()
    bow.data = np.log1p(bow.data).astype(np.float32)  # counts -> log(1 + count)
    lengths = rng.integers(1, 7, size=n)
    tags = []
    for i in range(n):
        own = rng.random(lengths[i]) < TAG_SIGNAL
        tags.append(np.where(own, style_tags[style[i], rng.integers(40, size=lengths[i])],
                             rng.integers(TAG_VOCAB, size=lengths[i])))
    ids = ub.pad_ids(tags, length=6)  # ids + 1, 0 is padding
    return bow, ids, (topic * STYLES + style).astype(np.int64)


def build(seed=0):
    bow = nn.Input("bow", FEATURES, sparse=True)
    tags = nn.Input("tags", ids=True)
    tag_mean = nn.EmbeddingMean(TAG_VOCAB + 1, 16, name="tag_mean")(tags)
    hidden = nn.Dense(32, "tanh", name="hidden")(bow, tag_mean)
    gate = nn.TopKGate(8, 2, name="gate")(hidden)
    moe = nn.MixtureOfExperts(16, 8, "relu", name="moe")(hidden, gate)
    out = nn.Dense(TOPICS * STYLES, "softmax", name="classes")(moe)
    return nn.Model([bow, tags], out, seed=seed)


def accuracy(model, bow, ids, labels):
    probs = model.predict({"bow": bow, "tags": ids})
    return float((probs.argmax(axis=1) == labels).mean())


def serve_onnx(path, bow, ids):
    """Class probabilities from an exported .onnx file, with ONNX Runtime and
    numpy alone (no unibackend, no ML framework): the CSR bag of words goes
    in as its three arrays, the padded tags as int64."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = {"bow_data": bow.data, "bow_indices": bow.indices.astype(np.int64),
            "bow_indptr": bow.indptr.astype(np.int64), "tags": ids.astype(np.int64)}
    return session.run(None, feed)[0]


def train(model, bow, ids, labels, epochs, batch_size, lr, seed, quiet=False, test=None):
    from tqdm import tqdm

    trainer = nn.Trainer(model, nn.Adam(lr))
    rng = np.random.default_rng(seed)
    n = labels.size
    for epoch in range(1, epochs + 1):
        order = rng.permutation(n)
        total, seen = 0.0, 0
        bar = tqdm(range(0, n, batch_size), desc=f"epoch {epoch}/{epochs}", unit="batch",
                   leave=False, disable=quiet, file=sys.stderr)
        for start in bar:
            idx = order[start:start + batch_size]
            loss = trainer.step({"bow": bow[idx], "tags": ids[idx]}, labels[idx])
            total += loss * idx.size
            seen += idx.size
            bar.set_postfix(loss=f"{total / seen:.4f}")
        bar.close()
        line = f"epoch {epoch}: loss {total / seen:.4f}"
        if test is not None:
            line += f", test accuracy {accuracy(model, *test):.3f}"
        print(line, flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="torch",
                   help="any installed backend (unibackend backends lists them); "
                        "training needs autodiff: torch, tensorflow, theano or jax")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--save", metavar="PATH", help="write the trained model here (.npz)")
    p.add_argument("--predict", metavar="PATH", help="load a saved model and report its test accuracy")
    p.add_argument("--train-size", type=int, default=6000)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)

    test = make_data(a.test_size, a.seed + 1)
    chance = 1.0 / (TOPICS * STYLES)
    if a.predict and a.predict.endswith(".onnx"):
        t0 = time.perf_counter()
        probs = serve_onnx(a.predict, test[0], test[1])
        acc = float((probs.argmax(axis=1) == test[2]).mean())
        print(f"onnxruntime: test accuracy {acc:.3f} (chance {chance:.3f}), "
              f"{a.test_size} predictions in {time.perf_counter() - t0:.2f}s")
        return 0
    ub.set_backend(a.backend)
    if a.predict:
        model = nn.load(a.predict)
        ub.get_backend()  # import the framework before the clock starts
        t0 = time.perf_counter()
        acc = accuracy(model, *test)
        print(f"{a.backend}: test accuracy {acc:.3f} (chance {chance:.3f}), "
              f"{a.test_size} predictions in {time.perf_counter() - t0:.2f}s")
        return 0

    model = build(a.seed)
    print(model.summary())
    bow, ids, labels = make_data(a.train_size, a.seed)
    t0 = time.perf_counter()
    try:
        train(model, bow, ids, labels, a.epochs, a.batch_size, a.lr, a.seed, a.quiet, test)
    except ub.CapabilityError as e:
        print(f"cannot train on {a.backend!r}: {e}\n"
              f"(numpy can still serve a trained model: --backend numpy --predict PATH)", file=sys.stderr)
        return 2
    took = time.perf_counter() - t0
    acc = accuracy(model, *test)
    print(f"{a.backend}: trained {a.epochs} epochs in {took:.1f}s; "
          f"test accuracy {acc:.3f} (chance {chance:.3f})")
    if a.save:
        model.save(a.save)
        print(f"saved to {a.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
