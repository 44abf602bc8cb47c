"""nn.load treats a model file as untrusted: whatever the bytes, it returns a
model or raises ModelFileError naming what is wrong; never another
exception, never unbounded memory, never a recursion the file controls.
Pinned examples for the corruptions that once escaped, then a hypothesis
fuzz over byte flips, truncations, member swaps, wrong types and deep or huge
JSON (a small budget: it runs in make test)."""
from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unibackend as ub
from unibackend import nn

ARCH = "__unibackend_nn__.npy"
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _model():
    bow = nn.Input("bow", 12, sparse=True)
    tags = nn.Input("tags", ids=True)
    emb = nn.EmbeddingMean(7, 3, name="tag_mean")(tags)
    hidden = nn.Dense(4, "tanh", name="hidden")(bow, emb)
    gate = nn.TopKGate(3, 2, name="gate")(hidden)
    moe = nn.MixtureOfExperts(4, 3, "relu", name="moe")(hidden, gate)
    out = nn.Dense(2, "softmax", name="out")(moe)
    return nn.Model([bow, tags], out, seed=0)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """The bytes of a valid model file."""
    path = _model().save(tmp_path_factory.mktemp("good") / "m.npz")
    with open(path, "rb") as f:
        return f.read()


def _members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _zip(members, compression=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _arch_bytes(obj_or_text):
    text = obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text)
    return _npy(np.frombuffer(text.encode("utf-8"), dtype=np.uint8))


def _with_arch(good, change):
    """A copy of ``good`` whose architecture JSON went through ``change``
    (which edits the dict in place or returns a replacement: any JSON value, or raw text)."""
    members = _members(good)
    arch = json.loads(np.load(io.BytesIO(members[ARCH])).tobytes())
    new = change(arch)
    members[ARCH] = _arch_bytes(arch if new is None else new)
    return _zip(members)


def _load_bytes(tmp_path, data, name="m.npz"):
    path = tmp_path / name
    path.write_bytes(data)
    return nn.load(path)


def _refused(tmp_path, data, *words):
    """Loading ``data`` raises ModelFileError (a ValueError) naming the file and ``words``."""
    with pytest.raises(nn.ModelFileError) as err:
        _load_bytes(tmp_path, data, "bad.npz")
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and "bad.npz" in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def _patch_headers(data, member, *, flags=None, method=None):
    """Set the general-purpose flags / compression method of ``member`` in both
    its local header and its central directory entry (raw bytes)."""
    out = bytearray(data)
    name = member.encode()
    for sig, flag_at, method_at, name_len_at, name_at in ((b"PK\x03\x04", 6, 8, 26, 30),
                                                          (b"PK\x01\x02", 8, 10, 28, 46)):
        start = 0
        while (i := out.find(sig, start)) >= 0:
            start = i + 4
            (n,) = struct.unpack_from("<H", out, i + name_len_at)
            if bytes(out[i + name_at:i + name_at + n]) != name:
                continue
            if flags is not None:
                struct.pack_into("<H", out, i + flag_at, flags)
            if method is not None:
                struct.pack_into("<H", out, i + method_at, method)
    return bytes(out)


# -- pinned: the corruptions that escaped as other exceptions ------------------

def test_the_good_file_loads(tmp_path, good):
    model = _load_bytes(tmp_path, good)
    assert model.architecture() == _model().architecture()


@pytest.mark.parametrize("cls", [["Dense"], {"Dense": 1}, 3, None])
def test_a_layer_class_that_is_not_a_string_is_refused(tmp_path, good, cls):
    def change(arch):
        arch["layers"][-1]["class"] = cls

    _refused(tmp_path, _with_arch(good, change), ARCH, "unknown layer class")


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_json_is_refused_before_parsing(tmp_path, good, depth):
    def change(arch):
        arch["layers"][-1]["config"]["units"] = json.loads("[" * 30 + "]" * 30)  # legal depth, wrong type
        return "[" * depth + "]" * depth

    _refused(tmp_path, _with_arch(good, change), ARCH, f"nested {depth} deep")


def test_a_member_that_is_not_npy_is_refused(tmp_path, good):
    members = _members(good)
    members["readme.txt"] = b"hello"
    _refused(tmp_path, _zip(members), "'readme.txt'", "not an .npy array")


def test_an_npy_header_claiming_1e13_elements_is_refused_before_allocating(tmp_path, good):
    members = _members(good)
    name = "param/out/b.npy"
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**13,)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    members[name] = buf.getvalue() + members[name][-8:]
    _refused(tmp_path, _zip(members), repr(name), "declares shape (10000000000000,)", "holds 8 bytes")


def test_an_unknown_compression_method_is_refused(tmp_path, good):
    data = _patch_headers(good, "param/out/b.npy", method=99)
    _refused(tmp_path, data, "'param/out/b.npy'", "compression method 99")


def test_an_encrypted_member_is_refused(tmp_path, good):
    data = _patch_headers(good, "param/out/b.npy", flags=0x1)
    _refused(tmp_path, data, "'param/out/b.npy'", "encrypted")


def test_a_zip_bomb_is_refused_before_inflating(tmp_path, good):
    members = _members(good)
    members["param/out/b.npy"] = _npy(np.zeros(5_000_000, np.float32))  # 20 MB of zeros, deflates to ~20 KB
    bomb = _zip(members, zipfile.ZIP_DEFLATED)
    assert len(bomb) < 200_000
    _refused(tmp_path, bomb, "over the cap", "zip bomb")


def test_object_and_string_arrays_are_refused_without_unpickling(tmp_path, good):
    members = _members(good)
    members["param/out/b.npy"] = _npy(np.array(["a", "b"]))
    _refused(tmp_path, _zip(members), "'param/out/b.npy'", "not a plain numeric dtype")


def test_a_4000_layer_chain_saves_loads_and_predicts(tmp_path):
    """Depth is not limited by Python's recursion limit (iterative graph walks)."""
    x = nn.Input("x", 2)
    h = x
    for _ in range(4000):
        h = nn.Dense(2, "relu", bias=False)(h)
    model = nn.Model(x, h, seed=0)
    back = nn.load(model.save(tmp_path / "deep.npz"))
    assert len(back.layers) == 4001
    data = {"x": np.ones((3, 2), np.float32)}
    with ub.use_backend("numpy"):
        np.testing.assert_array_equal(back.predict(data), model.predict(data))


# -- the fuzz: whatever the bytes, a model or ModelFileError -------------------

def _loads_or_refuses(tmp_path, data):
    """The property: load returns a Model or raises ModelFileError, nothing else."""
    path = tmp_path / "fuzz.npz"
    path.write_bytes(data)
    try:
        model = nn.load(path)
    except nn.ModelFileError as e:
        assert "fuzz.npz" in str(e)
    else:
        assert isinstance(model, nn.Model)


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=8))
def test_fuzz_byte_flips(tmp_path, good, flips):
    """Any bytes of the file XOR-ed: a model or ModelFileError."""
    data = bytearray(good)
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    _loads_or_refuses(tmp_path, bytes(data))


@FUZZ
@given(keep=st.floats(0, 1, exclude_max=True))
def test_fuzz_truncations(tmp_path, good, keep):
    """The file cut anywhere: ModelFileError."""
    _loads_or_refuses(tmp_path, good[: int(keep * len(good))])


@FUZZ
@given(data=st.data())
def test_fuzz_member_swaps(tmp_path, good, data):
    """Two members' contents swapped, or one member's name given to another: a model or ModelFileError."""
    members = _members(good)
    names = sorted(members)
    a, b = data.draw(st.permutations(names))[:2]
    if data.draw(st.booleans()):
        members[a], members[b] = members[b], members[a]
    else:
        members[a] = members.pop(b)
    _loads_or_refuses(tmp_path, _zip(members))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _json_paths(value, prefix=()):
    """Every path (tuple of keys/indices) into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _json_paths(v, prefix + (i,))


@FUZZ
@given(data=st.data())
def test_fuzz_wrong_types_in_the_architecture(tmp_path, good, data):
    """Any field of the architecture JSON (or the whole record) replaced by any JSON value: a model or ModelFileError."""
    arch = json.loads(np.load(io.BytesIO(_members(good)[ARCH])).tobytes())
    path = data.draw(st.sampled_from(list(_json_paths(arch))))
    value = data.draw(JSON_VALUES)

    def change(arch):
        if not path:
            return value
        node = arch
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value

    _loads_or_refuses(tmp_path, _with_arch(good, change))


@FUZZ
@given(depth=st.integers(1, 50_000), width=st.integers(0, 200_000), opener=st.sampled_from("[{"))
def test_fuzz_deep_or_huge_json(tmp_path, good, depth, width, opener):
    """A deep or long JSON value in place of a config field: ModelFileError."""
    closer = {"[": "]", "{": "}"}[opener]
    inner = "[" + ",".join(["0"] * width) + "]"
    nested = (opener + '"k":') * depth if opener == "{" else opener * depth
    text_value = nested + inner + closer * depth

    def change(arch):
        text = json.dumps(arch).replace('"units": 2', '"units": ' + text_value, 1)
        return text

    _loads_or_refuses(tmp_path, _with_arch(good, change))


def test_a_mixture_whose_predict_time_constants_outgrow_the_file_is_refused(tmp_path):
    """A MixtureOfExperts builds (E, E*u) and (E*u, u) 0/1 matrices when it first
    predicts: u**2 floats from a file holding about u of them is refused at load."""
    x = nn.Input("x", 1)
    gate = nn.TopKGate(1, 1, name="gate")(x)
    moe = nn.MixtureOfExperts(20_000, 1, "relu", name="moe")(x, gate)  # W (1, 20000), b (20000,): 160 KB
    path = nn.Model(x, moe, seed=0).save(tmp_path / "moe.npz")          # gather: 20000 x 20000 floats, 1.6 GB
    with pytest.raises(nn.ModelFileError, match=r"layer 'moe': experts=1, units=20000 need \d+ bytes"):
        nn.load(path)
    small = nn.Model(x, nn.MixtureOfExperts(8, 1, "relu")(x, nn.TopKGate(1, 1)(x)), seed=0)
    assert isinstance(nn.load(small.save(tmp_path / "small.npz")), nn.Model)
