import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("onnxscript")

from onnxprune.zoo.digits import digits28  # noqa: E402
from onnxprune.zoo.train import (  # noqa: E402
    accuracy,
    export,
    predict,
    psnr,
    train_autoencoder,
    train_classifier,
)

SHORT_AE_EPOCHS = 5  # about 25 dB, 2-5 s
SHORT_CLF_EPOCHS = 2  # about 95 %, 1-3 s
# The mean training image as every reconstruction scores about 14.5 dB on the test set.
MARGIN_DB = 8.0
FULL_AE_PSNR = 31.0  # 30 epochs reach 31.4-32.0 dB over seeds 0-3


@pytest.fixture(scope="module")
def heldout_digits():
    return digits28("test")


@pytest.fixture(scope="module")
def short_ae():
    return train_autoencoder(epochs=SHORT_AE_EPOCHS)


@pytest.fixture(scope="module")
def short_clf():
    return train_classifier(epochs=SHORT_CLF_EPOCHS)


def _ort(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def test_psnr_and_accuracy():
    x = np.zeros((3, 1, 4, 4), np.float32)
    assert psnr(x, x + 0.1) == pytest.approx(20.0)
    assert psnr(x, np.concatenate([x[:2] + 0.1, x[2:] + 0.01])) == pytest.approx(80 / 3)
    assert psnr(x, x) == pytest.approx(120.0)
    with pytest.raises(ValueError, match="shapes"):
        psnr(x, x[:2])
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert accuracy(logits, np.array([1, 0, 0, 0])) == 0.75
    with pytest.raises(ValueError, match="accuracy"):
        accuracy(logits, np.array([1, 0]))


def test_short_autoencoder_beats_mean_image(short_ae, heldout_digits):
    x_test, _ = heldout_digits
    x_train, _ = digits28("train")
    baseline = psnr(np.broadcast_to(x_train.mean(0), x_test.shape), x_test)
    assert 13.0 < baseline < 16.0
    assert short_ae.score > baseline + MARGIN_DB
    assert short_ae.score == pytest.approx(psnr(predict(short_ae.model, x_test), x_test))
    assert len(short_ae.losses) == SHORT_AE_EPOCHS
    assert short_ae.losses[-1] < short_ae.losses[0]
    assert not short_ae.model.training


def test_training_is_deterministic():
    a, b = train_autoencoder(epochs=1, seed=3), train_autoencoder(epochs=1, seed=3)
    assert a.losses == b.losses
    for va, vb in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(va, vb)
    assert train_autoencoder(epochs=1, seed=4).losses != a.losses


def test_short_classifier(short_clf, heldout_digits):
    x_test, y_test = heldout_digits
    assert short_clf.score > 0.8
    assert short_clf.score == accuracy(predict(short_clf.model, x_test), y_test)


@pytest.mark.parametrize("which", ["short_ae", "short_clf"])
def test_export_matches_torch(which, request, heldout_digits, tmp_path):
    model = request.getfixturevalue(which).model
    x = heldout_digits[0][:7]
    path = export(model, tmp_path / f"{which}.onnx", (1, 28, 28))
    expected = predict(model, x)
    for batch in (x, x[:1]):
        np.testing.assert_allclose(_ort(path, batch), expected[: len(batch)], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_full_autoencoder():
    result = train_autoencoder()
    assert result.score >= FULL_AE_PSNR, f"{result.score:.2f} dB in {result.seconds:.0f} s"


@pytest.mark.slow
def test_full_classifier():
    result = train_classifier()
    assert result.score >= 0.97, f"{result.score:.4f} in {result.seconds:.0f} s"
