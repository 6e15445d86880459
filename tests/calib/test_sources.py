"""``--calib PATH`` reads data as users have it: image folders (labels from sub-folders), globs
and list files, text with a tokenizers tokenizer, audio files, datasets folders; each into the
arrays an .npz would hold, checked on files the tests write, and every bad source is one line
and exit 2 with nothing written."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from onnxprune.api import prune
from onnxprune.calib import Settings, kind_of, read
from onnxprune.errors import UsageError
from onnxprune.ir.shapes import input_specs
from onnxprune.zoo.builder import GraphBuilder

Image = pytest.importorskip("PIL.Image")


def _cnn(shape=("batch", 3, 16, 16), name="image") -> onnx.ModelProto:
    b = GraphBuilder(seed=0)
    last = shape[-1] in (1, 3)
    c = shape[-1] if last else shape[1]
    x = b.input(name, list(shape))
    if last:
        x = b.op("Transpose", [x], perm=[0, 3, 1, 2])
    h = b.relu(b.conv(x, c, 8, name="c1"))
    h = b.op("GlobalAveragePool", [b.relu(b.conv(h, 8, 8, name="c2"))])
    return b.build([b.gemm(b.op("Flatten", [h], axis=1), 8, 4, name="fc")], "cnn")


def _draw(path, size, color, mode="RGB"):
    im = Image.new(mode, size, color)
    im.save(path)
    return np.asarray(im, np.float32)


def _read(path, model, **settings):
    return read(path, input_specs(model), Settings(**settings))


def test_an_image_folder_with_class_folders_gives_pixels_and_labels(tmp_path):
    for k, cls in enumerate(("ant", "bee")):
        (tmp_path / cls).mkdir()
        for i in range(3):
            _draw(tmp_path / cls / f"{i}.png", (16, 16), (10 * i, 100 + k, 200))
    got = _read(tmp_path, _cnn())
    assert got.kind == "images" and kind_of(tmp_path) == "images"
    x = got.arrays["image"]
    assert x.shape == (6, 3, 16, 16) and x.dtype == np.float32
    assert got.arrays["labels"].tolist() == [0, 0, 0, 1, 1, 1]
    assert np.allclose(x[4, :, 5, 5], np.array([10, 101, 200]) / 255)
    bgr = _read(tmp_path, _cnn(), bgr=True).arrays["image"]
    assert np.array_equal(bgr[:, ::-1], x)
    normed = _read(tmp_path, _cnn(), normalize=((0.5,), (0.25,))).arrays["image"]
    assert np.allclose(normed, (x - 0.5) / 0.25)


def test_channels_last_grey_and_the_resize_modes(tmp_path):
    im = np.zeros((10, 20, 3), np.uint8)
    im[:, :10] = 255  # left half white, 20 wide x 10 high
    Image.fromarray(im).save(tmp_path / "a.png")
    nhwc = _cnn(("batch", 10, 10, 3))
    stretch = _read(tmp_path, nhwc).arrays["image"]
    assert stretch.shape == (1, 10, 10, 3)
    assert stretch[0, 5, 1, 0] == 1.0 and stretch[0, 5, 8, 0] == 0.0
    box = _read(tmp_path, nhwc, resize="letterbox").arrays["image"][0, :, :, 0]
    assert np.all(box[:2] == 0) and np.all(box[-2:] == 0)  # 10x5 centred: rows 0-1, 8-9 padding
    assert box[5, 2] == 1.0
    wide = _cnn(("batch", 10, 40, 3))  # pad: the height to 10, the width 20 of 40, padded
    pad = _read(tmp_path, wide, resize="pad").arrays["image"][0, :, :, 0]
    assert np.all(pad[:, 20:] == 0) and pad[5, 2] == 1.0 and pad[5, 15] == 0.0
    normed = _read(tmp_path, wide, resize="pad", normalize=((0.5,), (0.5,))).arrays["image"]
    assert np.all(normed[0, :, 20:] == 0) and normed[0, 5, 2, 0] == 1.0  # zero after normalizing
    assert normed[0, 5, 15, 0] == -1.0  # black content is -1, padding 0
    crop = _read(tmp_path, nhwc, resize="crop").arrays["image"][0, :, :, 0]
    assert crop[5, 0] == 1.0 and crop[5, 9] == 0.0  # 20x10 -> centre 10x10: half white
    grey = _read(tmp_path, _cnn(("batch", 1, 10, 10))).arrays["image"]
    assert grey.shape == (1, 1, 10, 10) and 0.99 < grey[0, 0, 5, 1] <= 1.0


def _paddle_rec(image: np.ndarray, height: int, width: int, cv2) -> np.ndarray:
    """PaddleOCR's recognizer preprocessing (resize_norm_img), spelled here from its source: a
    BGR line to the input's height, its width in ratio rounded up and at most the input's,
    (x / 255 - 0.5) / 0.5, zeros to the right."""
    ratio = image.shape[1] / image.shape[0]
    w = width if np.ceil(height * ratio) > width else int(np.ceil(height * ratio))
    resized = cv2.resize(image, (w, height)).astype("float32")
    resized = resized.transpose((2, 0, 1)) / 255
    resized -= 0.5
    resized /= 0.5
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :w] = resized
    return out


def test_pad_with_opencv_gives_paddleocrs_own_arrays(tmp_path):
    """--calib-resize pad, --calib-channels bgr, --calib-normalize 0.5/0.5 and
    calibrate.resampler=opencv are PaddleOCR's recognizer preprocessing: the arrays equal its
    own (to float32 rounding of the same 8-bit pixels: one 8-bit step is 0.0078 there), lines
    wider than the input squeezed as it squeezes them; Pillow's resampling differs."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    want = []
    for i, (h, w) in enumerate([(10, 20), (12, 90), (30, 40), (7, 3), (24, 50)]):
        bgr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(bgr[..., ::-1]).save(tmp_path / f"{i}.png")  # stored as RGB
        want.append(_paddle_rec(bgr, 24, 96, cv2))
    model = _cnn(("batch", 3, 24, 96), name="x")
    how = {"resize": "pad", "bgr": True, "normalize": ((0.5,), (0.5,))}
    got = _read(tmp_path, model, resampler="opencv", **how)
    assert "(OpenCV)" in got.note
    np.testing.assert_allclose(got.arrays["x"], np.stack(want), rtol=0, atol=1e-6)
    pillow = _read(tmp_path, model, **how).arrays["x"]
    assert np.max(np.abs(pillow - np.stack(want))) > 2 / 255  # antialiased: other pixels


def test_a_glob_a_list_file_and_a_preprocessor_config_beside_the_model(tmp_path):
    for i in range(4):
        _draw(tmp_path / f"p{i}.jpg" if i % 2 else tmp_path / f"p{i}.png", (32, 24), (50, 60, 70))
    assert len(_read(tmp_path / "*.png", _cnn()).arrays["image"]) == 2
    (tmp_path / "list.txt").write_text("p1.jpg\np2.png\np3.jpg\n")
    assert kind_of(tmp_path / "list.txt") == "images"
    got = _read(tmp_path / "list.txt", _cnn()).arrays
    assert len(got["image"]) == 3 and "labels" not in got
    # a path and its label a line (ImageNet's validation lists)
    (tmp_path / "labelled.txt").write_text("p1.jpg 7\np2.png 0\np3.jpg 7\n")
    assert kind_of(tmp_path / "labelled.txt") == "images"
    read = _read(tmp_path / "labelled.txt", _cnn())
    assert read.arrays["labels"].tolist() == [7, 0, 7] and "labels of 2 classes" in read.note
    np.testing.assert_array_equal(read.arrays["image"], got["image"])
    (tmp_path / "mixed.txt").write_text("p1.jpg 7\np2.png\n")
    with pytest.raises(UsageError, match="some lines give a label and some do not"):
        _read(tmp_path / "mixed.txt", _cnn())
    model_path = tmp_path / "m.onnx"
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "do_rescale": True, "rescale_factor": 1 / 255, "size": {"height": 12, "width": 14}}))
    dynamic = _cnn(("batch", 3, "h", "w"))
    got = _read(tmp_path / "*.png", dynamic, model_path=model_path)
    x = got.arrays["image"]
    assert x.shape == (2, 3, 12, 14)  # the processor's size for a dynamic input
    assert np.allclose(x[0, :, 3, 3], (np.array([50, 60, 70]) / 255 - 0.5) / 0.5, atol=1e-6)
    assert "preprocessor_config.json" in got.note
    with pytest.raises(UsageError, match="dynamic image size"):
        _read(tmp_path / "*.png", dynamic)


def _text_model():
    b = GraphBuilder(seed=0)
    ids = b.input("input_ids", ["batch", "seq"])
    mask = b.input("attention_mask", ["batch", "seq"])
    b.inputs[0].type.tensor_type.elem_type = onnx.TensorProto.INT64
    b.inputs[1].type.tensor_type.elem_type = onnx.TensorProto.INT64
    table = b.weight(20, 8, hint="emb")
    e = b.op("Gather", [table, ids], axis=0)
    m = b.op("Unsqueeze", [b.op("Cast", [mask], to=onnx.TensorProto.FLOAT),
                           b.const(np.array([-1], np.int64))])
    pooled = b.op("ReduceMean", [b.op("Mul", [e, m])], axes=[1], keepdims=0)
    h = b.relu(b.gemm(pooled, 8, 16, name="fc1"))
    return b.build([b.gemm(h, 16, 4, name="fc2")], "text")


def _tokenizer(path):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "the", "cat", "sat", "on", "a", "mat",
                                        "dog", "ran"])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(path))
    return path


def test_text_with_a_tokenizer_gives_ids_masks_and_reports_truncation(tmp_path):
    model = _text_model()
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [7, 7]
    (tmp_path / "s.txt").write_text("the cat sat\n\nthe dog ran on a mat\nzebra\n")
    tok = _tokenizer(tmp_path / "tok.json")
    got = _read(tmp_path / "s.txt", model, tokenizer=tok)
    ids, mask = got.arrays["input_ids"], got.arrays["attention_mask"]
    assert ids.tolist() == [[2, 3, 4, 0, 0, 0], [2, 8, 9, 5, 6, 7], [1, 0, 0, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6, [1, 0, 0, 0, 0, 0]]
    assert ids.dtype == np.int64
    short = _read(tmp_path / "s.txt", model, tokenizer=tok, max_length=4)
    assert short.arrays["input_ids"].shape == (3, 4) and "1 truncated at 4 tokens" in short.note
    (tmp_path / "s.jsonl").write_text('{"text": "a cat"}\n{"text": "the mat", "id": 3}\n')
    onnx.save(model, tmp_path / "m.onnx")
    (tmp_path / "tokenizer.json").write_bytes(tok.read_bytes())  # found beside the model
    j = _read(tmp_path / "s.jsonl", model, model_path=tmp_path / "m.onnx")
    assert j.arrays["input_ids"].tolist() == [[6, 3], [2, 7]]
    # sentence pairs (a cross-encoder's input): both texts, encoded as a pair
    (tmp_path / "pairs.jsonl").write_text('{"text": "a cat", "text_pair": "the dog ran"}\n'
                                          '{"text": "the mat", "text_pair": "sat"}\n')
    pairs = _read(tmp_path / "pairs.jsonl", model, model_path=tmp_path / "m.onnx")
    assert pairs.arrays["input_ids"].tolist() == [[6, 3, 2, 8, 9], [2, 7, 4, 0, 0]]
    assert "2 text pair(s)" in pairs.note
    (tmp_path / "half.jsonl").write_text('{"text": "a cat", "text_pair": "sat"}\n'
                                         '{"text": "the mat"}\n')
    with pytest.raises(UsageError, match="some lines have a 'text_pair'"):
        _read(tmp_path / "half.jsonl", model, model_path=tmp_path / "m.onnx")
    (tmp_path / "long.txt").write_text("the cat sat on a mat " * 40 + "\n")
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 64}))
    capped = _read(tmp_path / "long.txt", model, model_path=tmp_path / "m.onnx")
    assert capped.arrays["input_ids"].shape == (1, 64)  # the model's position limit
    assert "1 truncated at 64 tokens" in capped.note
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(UsageError, match="text needs a tokenizer"):
        _read(tmp_path / "s.txt", model, model_path=tmp_path / "m.onnx")


def _audio_model(length=400):
    b = GraphBuilder(seed=0)
    x = b.input("wave", ["batch", length])
    return b.build([b.gemm(b.relu(b.gemm(x, length, 16, name="fc1")), 16, 3, name="fc2")])


def test_audio_is_resampled_and_cut_into_the_inputs_length(tmp_path):
    sf = pytest.importorskip("soundfile")
    t = np.arange(8000) / 8000  # one second at 8 kHz
    sf.write(tmp_path / "a.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 8000)
    sf.write(tmp_path / "b.flac", np.stack([np.sin(2 * np.pi * 200 * t)] * 2, 1) * 0.3, 8000)
    got = _read(tmp_path, _audio_model(), sample_rate=16000)
    x = got.arrays["wave"]
    assert got.kind == "audio" and x.shape == (80, 400)  # 2 files x 16000 / 400
    spectrum = np.abs(np.fft.rfft(np.concatenate(x[:40])))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) <= 1  # 440 Hz kept at 16 kHz
    assert abs(np.max(np.abs(x[:40])) - 0.5) < 0.02
    pinned = _read(tmp_path, _audio_model(), pinned={"sr": np.array(8000)})
    assert pinned.arrays["wave"].shape == (40, 400)
    with pytest.raises(UsageError, match="needs a sample rate"):
        _read(tmp_path, _audio_model())


def test_a_datasets_folder_reads_its_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    model = _text_model()
    datasets.Dataset.from_dict({"sentence": ["the cat", "a dog ran"], "label": [0, 1]}
                               ).save_to_disk(str(tmp_path / "ds"))
    tok = _tokenizer(tmp_path / "tok.json")
    got = _read(tmp_path / "ds", model, tokenizer=tok)
    assert kind_of(tmp_path / "ds") == "dataset"
    assert got.arrays["input_ids"].tolist() == [[2, 3, 0], [6, 8, 9]]
    assert got.arrays["labels"].tolist() == [0, 1]
    pics = [Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(3)]
    datasets.Dataset.from_dict({"img": pics, "txt": ["a", "b", "c"]}).save_to_disk(
        str(tmp_path / "ds2"))
    with pytest.raises(UsageError, match="--calib-column"):
        _read(tmp_path / "ds2", _cnn())
    x = _read(tmp_path / "ds2", _cnn(), column="img").arrays["image"]
    assert x.shape == (3, 3, 16, 16) and np.allclose(x[2, 0], 80 / 255)


def test_a_png_folder_and_the_npz_of_its_pixels_choose_the_same_cut(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8)
    for i, px in enumerate(pixels):
        (tmp_path / "imgs" / str(i % 2)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(px).save(tmp_path / "imgs" / str(i % 2) / f"{i:03d}.png")
    order = [i for k in (0, 1) for i in range(30) if i % 2 == k]  # the folder order
    np.savez(tmp_path / "same.npz", image=(pixels[order].transpose(0, 3, 1, 2) / 255
                                           ).astype(np.float32))
    opts = {"strategy": "sensitivity", "target_params": 0.4}
    a = prune(_cnn(), None, calib=str(tmp_path / "imgs"), **opts)
    b = prune(_cnn(), None, calib=str(tmp_path / "same.npz"), **opts)
    assert np.array_equal(a.plan.removed, b.plan.removed)
    assert a.stages == b.stages and a.calibration.startswith("30 image(s)")


@pytest.mark.parametrize("case, message", [
    ("broken", "broken.png: not a readable image"),
    ("empty", "a folder with no usable file"),
    ("channels", "no axis of 1 or 3 channels"),
    ("notext", "text needs a tokenizer"),
    ("unknown", "unknown calibration data"),
    ("missing", "no such file or folder"),
])
def test_bad_sources_are_one_line_and_exit_2_with_nothing_written(tmp_path, case, message):
    model = _text_model() if case == "notext" else _cnn(
        ("batch", 5, 16, 16) if case == "channels" else ("batch", 3, 16, 16))
    onnx.save(model, tmp_path / "m.onnx")
    src = tmp_path / "data"
    if case == "broken":
        src.mkdir()
        _draw(src / "ok.png", (16, 16), (1, 2, 3))
        (src / "broken.png").write_bytes(b"\x89PNG not really")
    elif case == "empty":
        src.mkdir()
        (src / "notes.md").write_text("nothing here")
    elif case == "channels":
        src.mkdir()
        _draw(src / "a.png", (16, 16), (1, 2, 3))
    elif case == "notext":
        src = tmp_path / "s.txt"
        src.write_text("the cat\n")
    elif case == "unknown":
        src = tmp_path / "data.csv"
        src.write_text("1,2\n")
    out = tmp_path / "out.onnx"
    done = subprocess.run([sys.executable, "-m", "onnxprune", "prune", str(tmp_path / "m.onnx"),
                           "-o", str(out), "--calib", str(src), "--target-params", "0.3"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr
    assert not out.exists()


def test_the_digits_png_folder_reads_back_as_the_npz_does(tmp_path):
    pytest.importorskip("sklearn")
    from onnxprune.zoo.catalog import write_digits

    folder, n = write_digits(tmp_path / "digits", count=40, fmt="png")
    npz, _ = write_digits(tmp_path / "digits.npz", count=40)
    with np.load(npz) as f:
        x, y = f["input"], f["labels"]
    got = _read(folder, _cnn(("batch", 1, 28, 28), name="input"))
    order = np.argsort(y, kind="stable")  # the folders list class 0 first
    assert n == 40 and got.arrays["labels"].tolist() == y[order].tolist()
    assert np.abs(got.arrays["input"] - x[order]).max() <= 0.5 / 255 + 1e-6
    with pytest.raises(UsageError, match="exists"):
        write_digits(folder, count=5, fmt="png")


def test_a_reader_whose_package_is_missing_names_the_extra():
    from onnxprune.calib.common import need

    with pytest.raises(UsageError, match=r"reading images needs Pillow: pip install "
                                         r"'onnxprune\[data\]'"):
        need("onnxprune_no_such_module", "Pillow", "images")
    assert need("numpy", "numpy", "arrays") is np
