import gzip
import sys

import numpy as np
import pytest

from onnxprune.ir.arrays import load_npz, save_npz
from onnxprune.zoo import digits as data
from onnxprune.zoo.digits import digits28, load_mnist

N_DIGITS = 1797


def _write_idx(path, array):
    """``array`` (uint8) as an IDX file; gzipped when ``path`` ends in ``.gz``."""
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def _mnist_like(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


# digits28


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return digits28("train"), digits28("test")


def test_digits28_shapes_and_ranges(digits):
    for x, y in digits:
        assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1:] == (1, 28, 28)
        assert y.dtype == np.int64 and y.shape == (len(x),)
        assert x.min() == 0.0 and x.max() == 1.0
        assert set(np.unique(y)) == set(range(10))
        border = np.ones((28, 28), bool)
        border[2:-2, 2:-2] = False
        assert not x[:, 0, border].any()
        assert 0.05 < x.mean() < 0.5


def test_digits28_stratified_disjoint_split(digits):
    (x, y), (xt, yt) = digits
    assert len(x) + len(xt) == N_DIGITS
    total = np.bincount(y) + np.bincount(yt)
    np.testing.assert_array_equal(np.bincount(yt), np.round(total * 0.25).astype(int))
    assert not {r.tobytes() for r in x} & {r.tobytes() for r in xt}


def test_digits28_deterministic_and_seeded(digits):
    (x, y), _ = digits
    x2, y2 = digits28("train", seed=0)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = digits28("train", seed=1)
    assert x3.shape == x.shape and not np.array_equal(x3, x)
    xt, _ = digits28("test", test_fraction=0.5)
    assert abs(len(xt) - N_DIGITS / 2) <= 10


def test_digits28_bad_arguments(digits):
    with pytest.raises(ValueError, match="split"):
        digits28("val")
    with pytest.raises(ValueError, match="test_fraction"):
        digits28(test_fraction=1.0)


def test_digits28_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    data._digits28_all.cache_clear()
    try:
        with pytest.raises(ImportError, match="scikit-learn"):
            digits28()
    finally:
        data._digits28_all.cache_clear()


# load_mnist: IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    images, labels = _mnist_like(5)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels)
    x, y = load_mnist(tmp_path / f"t10k-images-idx3-ubyte{suffix}")
    assert x.dtype == np.float32 and x.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(x[:, 0], images / 255.0, atol=1e-7)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)


def test_idx_labels_plain_next_to_gz_images(tmp_path):
    images, labels = _mnist_like(3)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    np.testing.assert_array_equal(load_mnist(tmp_path / "train-images-idx3-ubyte.gz")[1], labels)


def test_idx_without_labels(tmp_path):
    _write_idx(tmp_path / "train-images-idx3-ubyte", _mnist_like(4)[0])
    x, y = load_mnist(tmp_path / "train-images-idx3-ubyte")
    assert x.shape == (4, 1, 28, 28) and y is None


def test_idx_directory_splits(tmp_path):
    (tr, ytr), (te, yte) = _mnist_like(6, seed=1), _mnist_like(2, seed=2)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", tr)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", ytr)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", te)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", yte)
    x, y = load_mnist(tmp_path)
    assert x.shape == (8, 1, 28, 28)
    np.testing.assert_array_equal(y, np.concatenate([ytr, yte]))
    assert len(load_mnist(tmp_path, split="test")[0]) == 2
    with pytest.raises(ValueError, match="split"):
        load_mnist(tmp_path, split="val")


@pytest.mark.parametrize(
    "content, match",
    [
        (b"not an idx file at all", "magic"),
        (bytes([0, 0, 0x08, 3]) + np.array([2, 28], ">u4").tobytes(), "truncated"),
        (bytes([0, 0, 0x08, 3]) + np.array([2, 28, 28], ">u4").tobytes() + b"\0" * 10, "bytes"),
    ],
)
def test_idx_garbage(tmp_path, content, match):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_mnist(path)


def test_idx_errors(tmp_path):
    bad_gz = tmp_path / "train-images-idx3-ubyte.gz"
    bad_gz.write_bytes(b"plain bytes, not gzip")
    with pytest.raises(ValueError, match="IDX"):
        load_mnist(bad_gz)
    small = tmp_path / "small-images-idx3-ubyte"
    _write_idx(small, np.zeros((2, 16, 16)))
    with pytest.raises(ValueError, match="28x28"):
        load_mnist(small)
    images = tmp_path / "t10k-images-idx3-ubyte"
    _write_idx(images, np.zeros((3, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2))
    with pytest.raises(ValueError, match="2 labels for 3 images"):
        load_mnist(images)
    with pytest.raises(ValueError, match="single set"):
        load_mnist(images, split="train")
    with pytest.raises(FileNotFoundError):
        load_mnist(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no MNIST IDX"):
        load_mnist(tmp_path / "empty")


# load_mnist: npz


@pytest.mark.parametrize(
    "keys, layout",
    [(("x", "y"), (28, 28)), (("images", "labels"), (784,)), (("x", "y"), (28, 28, 1))],
)
def test_npz_variants(tmp_path, keys, layout):
    images, labels = _mnist_like(4)
    path = tmp_path / "mnist.npz"
    np.savez(path, **{keys[0]: images.reshape(4, *layout), keys[1]: labels})
    x, y = load_mnist(path)
    np.testing.assert_allclose(x[:, 0], images / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y, labels)


def test_npz_float_images_without_labels(tmp_path):
    images = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    np.savez(tmp_path / "a.npz", x=images)
    x, y = load_mnist(tmp_path / "a.npz")
    np.testing.assert_array_equal(x, images)
    assert y is None


def test_npz_keras_keys(tmp_path):
    (tr, ytr), (te, yte) = _mnist_like(5, seed=1), _mnist_like(3, seed=2)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=tr, y_train=ytr, x_test=te, y_test=yte)
    x, y = load_mnist(path)
    assert x.shape == (8, 1, 28, 28)
    np.testing.assert_array_equal(y, np.concatenate([ytr, yte]))
    xt, yt = load_mnist(path, split="test")
    np.testing.assert_allclose(xt[:, 0], te / 255.0, atol=1e-7)
    np.testing.assert_array_equal(yt, yte)
    assert len(load_mnist(path, split="train")[0]) == 5


def test_npz_mnist_errors(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, pixels=np.zeros((2, 28, 28)))
    with pytest.raises(ValueError, match="no images array"):
        load_mnist(path)
    np.savez(path, x=np.zeros((2, 28, 28)))
    with pytest.raises(ValueError, match="single set"):
        load_mnist(path, split="test")
    np.savez(path, x=np.zeros((2, 28, 28)), y=np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="integer"):
        load_mnist(path)
    np.savez(path, x=np.full((2, 28, 28), -1.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_mnist(path)
    np.savez(path, x_train=np.zeros((2, 28, 28)))
    with pytest.raises(ValueError, match="no test set"):
        load_mnist(path, split="test")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="not a valid .npz"):
        load_mnist(garbage)


# load_npz / save_npz


def test_npz_round_trip(tmp_path):
    arrays = {"input": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "mask": np.ones(2)}
    path = save_npz(tmp_path / "calib.data", **arrays)
    assert path == str(tmp_path / "calib.data")
    got = load_npz(path)
    assert sorted(got) == ["input", "mask"]
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].dtype == v.dtype


def test_load_npz_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("hello")
    with pytest.raises(ValueError, match="not a valid .npz"):
        load_npz(garbage)
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match=".npy"):
        load_npz(tmp_path / "single.npy")
    empty = tmp_path / "empty.npz"
    np.savez(empty)
    with pytest.raises(ValueError, match="no arrays"):
        load_npz(empty)
    np.savez(tmp_path / "batch.npz", a=np.zeros((2, 3)), b=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="batch size"):
        load_npz(tmp_path / "batch.npz")
    np.savez(tmp_path / "scalar.npz", a=np.float32(1))
    with pytest.raises(ValueError, match="batch axis"):
        load_npz(tmp_path / "scalar.npz")
    np.savez(tmp_path / "objects.npz", a=np.array([{}, 1], dtype=object))
    with pytest.raises(ValueError, match="not a valid .npz"):
        load_npz(tmp_path / "objects.npz")
    with pytest.raises(ValueError, match="at least one"):
        save_npz(tmp_path / "none.npz")
