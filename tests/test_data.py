"""Data sources, image conversion and the prepare stage, on data each test makes itself."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import socket
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_params
from PIL import Image

from resgan.data import sources
from resgan.data.collect import split_indices
from resgan.data.images import BadImage, ImageSpec, convert, from_array, load_image, open_image, to_8bit
from resgan.data.prepared import DataHasher, load_class_names, load_split
from resgan.errors import ResganError
from resgan.stages import prepare

EXACT = ImageSpec(image_size=16, channels=1, fit="resize")  # 16x16 inputs pass through unresampled


def prep(**overrides):
    """Tiny PrepareParams with overrides."""
    return tiny_params(prepare=overrides).prepare


def png(path: Path, image: Image.Image, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save)
    return path


def grey(value: int, size=(16, 16)) -> Image.Image:
    return Image.new("L", size, value)


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    """IDX as MNIST ships it: 00 00 <type> <ndim>, big-endian uint32 dims, big-endian data."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


# ------------------------------------------------------------------------------ image conversion


def test_cmyk_jpeg_black_and_white(tmp_path):
    black = png(tmp_path / "black.jpg", Image.new("CMYK", (16, 16), (0, 0, 0, 255)))
    white = png(tmp_path / "white.jpg", Image.new("CMYK", (16, 16), (0, 0, 0, 0)))
    assert int(load_image(black, EXACT).max()) <= 2  # JPEG is lossy: within 2 of 0
    assert int(load_image(white, EXACT).min()) >= 253
    rgb = load_image(black, ImageSpec(16, channels=3))
    assert rgb.shape == (16, 16, 3) and int(rgb.max()) <= 2


def test_16bit_png_keeps_top_byte_instead_of_clipping(tmp_path):
    values = np.zeros((16, 16), np.uint16)
    values[:, :4], values[:, 4:8], values[:, 8:12], values[:, 12:] = 65535, 32768, 255, 4660
    path = png(tmp_path / "deep.png", Image.fromarray(values))
    assert Image.open(path).mode == "I;16"  # the case under test really is 16-bit
    out = load_image(path, EXACT)[..., 0]
    # 65535 -> 255, 32768 -> 128, 255 -> 0 (clipping would give 255), 0x1234 -> 0x12
    assert out[0, 0] == 255 and out[0, 4] == 128 and out[0, 8] == 0 and out[0, 12] == 0x12


def test_mode_i_and_f_are_scaled_by_their_range():
    as_int = Image.fromarray(np.array([[65535, 256], [0, 512]], np.int32), mode="I")
    assert np.asarray(to_8bit(as_int, 1)).tolist() == [[255, 1], [0, 2]]
    small_int = Image.fromarray(np.array([[200, 3], [0, 255]], np.int32), mode="I")
    assert np.asarray(to_8bit(small_int, 1)).tolist() == [[200, 3], [0, 255]]
    unit = Image.fromarray(np.array([[1.0, 0.5], [0.0, 0.2]], np.float32), mode="F")
    assert np.asarray(to_8bit(unit, 1)).tolist() == [[255, 128], [0, 51]]
    signed = Image.fromarray(np.array([[-10.0, 10.0], [0.0, 0.0]], np.float32), mode="F")
    assert np.asarray(to_8bit(signed, 1)).tolist() == [[0, 255], [128, 128]]
    bits = Image.fromarray(np.array([[True, False]]))
    assert bits.mode == "1" and np.asarray(to_8bit(bits, 1)).tolist() == [[255, 0]]


def test_rgba_and_la_composite_onto_black(tmp_path):
    pixels = np.zeros((16, 16, 4), np.uint8)
    pixels[:8] = (255, 255, 255, 128)  # half-transparent white -> mid grey
    pixels[8:] = (255, 0, 0, 0)  # fully transparent red -> black
    path = png(tmp_path / "alpha.png", Image.fromarray(pixels, mode="RGBA"))
    out = load_image(path, EXACT)[..., 0]
    assert abs(int(out[0, 0]) - 128) <= 1 and out[15, 15] == 0
    la = Image.fromarray(np.dstack([np.full((16, 16), 200, np.uint8), np.full((16, 16), 51, np.uint8)]), "LA")
    assert abs(int(convert(la, EXACT)[0, 0, 0]) - 40) <= 1  # 200 * 51/255


def test_palette_gif_transparency_and_first_frame(tmp_path):
    palette = [0, 0, 0, 255, 255, 255, 255, 0, 0] + [0] * (256 * 3 - 9)
    image = Image.new("P", (16, 16), 2)  # index 2 (red) is the transparent one
    image.putpalette(palette)
    image.paste(1, (0, 0, 8, 16))  # left half opaque white
    path = png(tmp_path / "pal.gif", image, transparency=2)
    out = load_image(path, EXACT)[..., 0]
    assert out[0, 0] == 255 and out[0, 15] == 0  # transparent red composited onto black, not 76 (red's luma)

    frames = [grey(0), grey(255)]
    anim = png(tmp_path / "anim.gif", frames[0], save_all=True, append_images=frames[1:])
    assert Image.open(anim).n_frames == 2
    assert int(load_image(anim, EXACT).max()) == 0  # the first (black) frame, not the white one


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.arange(16 * 8, dtype=np.uint8).reshape(8, 16)  # 16 wide, 8 tall
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = png(tmp_path / "rotated.png", image, exif=exif)
    opened = open_image(path)
    assert opened.size == (8, 16)
    assert np.array_equal(np.asarray(opened), np.rot90(pixels, k=-1))


def test_resize_crops_the_centre_and_pad_centres_on_black():
    wide = np.full((16, 24), 255, np.uint8)
    wide[:, 4:20] = 0  # black centre square, white side bands
    assert int(convert(from_array(wide), EXACT).max()) == 0  # a squash would have let white in

    checker = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)
    down = convert(from_array(checker), EXACT)
    assert 110 <= down.min() and down.max() <= 145  # anti-aliased: nearest-neighbour gives 0/255

    small = convert(from_array(np.full((8, 8), 255, np.uint8)), ImageSpec(16, fit="pad"))[..., 0]
    assert small[4:12, 4:12].min() == 255 and small.sum() == 64 * 255  # centred, not enlarged
    big = convert(from_array(np.full((16, 32), 255, np.uint8)), ImageSpec(16, fit="pad"))[..., 0]
    assert big[4:12].min() == 255 and big[:4].max() == 0 and big[12:].max() == 0  # 32x16 -> 16x8


def test_channels_three_replicates_grey_and_one_uses_luma():
    assert convert(from_array(np.full((16, 16), 77, np.uint8)), ImageSpec(16, channels=3))[0, 0].tolist() == [77] * 3
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    assert convert(from_array(red), EXACT)[0, 0, 0] == 76  # ITU-R 601-2: 255 * 299/1000


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.png", b"", "zero-byte file"),
        ("notes.txt", b"not an image at all\n", "not an image (cannot identify)"),
    ],
)
def test_bad_files_give_reasons(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadImage) as caught:
        load_image(path, EXACT)
    assert caught.value.reason == reason


def test_truncated_too_small_bomb_and_symlink_loop(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    whole = png(tmp_path / "whole.png", Image.fromarray(noise)).read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    reasons = {}
    for name, spec in [("cut.png", EXACT), ("whole.png", ImageSpec(16, max_pixels=100))]:
        with pytest.raises(BadImage) as caught:
            load_image(tmp_path / name, spec)
        reasons[name] = caught.value.reason
    assert reasons["cut.png"] == "truncated image"
    assert reasons["whole.png"].startswith("decompression bomb (64x64 = 4096 pixels > limit 100)")

    png(tmp_path / "tiny.png", grey(9, size=(5, 7)))
    with pytest.raises(BadImage, match=r"too small \(5x7 < min_size 8\)"):
        load_image(tmp_path / "tiny.png", ImageSpec(16, min_size=8))

    os.symlink("loop.png", tmp_path / "loop.png")
    with pytest.raises(BadImage, match="symlink loop"):
        load_image(tmp_path / "loop.png", EXACT)
    os.mkfifo(tmp_path / "pipe.png")  # opening it for reading would block forever
    with pytest.raises(BadImage, match="not a regular file"):
        load_image(tmp_path / "pipe.png", EXACT)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_and_folder(tmp_path):
    png(tmp_path / "locked.png", grey(10)).chmod(0)
    png(tmp_path / "shut" / "a.png", grey(20))
    (tmp_path / "shut").chmod(0)
    try:
        with pytest.raises(BadImage, match="permission denied"):
            load_image(tmp_path / "locked.png", EXACT)
        raw = sources.load_folder(tmp_path)
        assert {"path": (tmp_path / "shut").as_posix(), "reason": "permission denied"} in raw.skipped
    finally:
        (tmp_path / "shut").chmod(0o755)


# ----------------------------------------------------------------------------------------- sources


def test_digits_source_scales_0_16_to_0_255():
    from sklearn.datasets import load_digits

    raw = sources.load_digits()
    reference = load_digits()
    assert len(raw.items) == 1797 and raw.class_names == [str(d) for d in range(10)]
    assert [item.label for item in raw.items[:12]] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    first = raw.items[0].pixels
    assert first.dtype == np.uint8 and first.shape == (8, 8)
    assert np.array_equal(first, np.rint(reference.images[0] * 255 / 16))
    assert max(int(item.pixels.max()) for item in raw.items) == 255
    assert raw.items[5].ref == "digits:5"


def make_folder(root: Path) -> None:
    png(root / "dog" / "b.png", grey(20))
    png(root / "cat" / "a.png", grey(10))
    png(root / "dog" / "deep" / "c.bmp", grey(30))
    png(root / "loose.tiff", grey(40))
    png(root / "cat" / "d.webp", grey(50), lossless=True)
    (root / "README.md").write_text("about the data")
    (root / ".DS_Store").write_bytes(b"\0\1")
    (root / "cat.dvc").write_text("outs: []")


def test_folder_source_order_labels_and_ignored_files(tmp_path):
    make_folder(tmp_path / "raw")
    os.symlink(tmp_path / "raw", tmp_path / "raw" / "dog" / "again")  # a loop if it were followed
    raw = sources.load_folder(tmp_path / "raw")
    root = (tmp_path / "raw").as_posix()
    expected = ("cat/a.png", "cat/d.webp", "dog/b.png", "dog/deep/c.bmp", "loose.tiff")
    assert [item.ref for item in raw.items] == [f"{root}/{p}" for p in expected]
    assert raw.class_names == ["cat", "dog"]
    assert [item.label for item in raw.items] == [0, 0, 1, 1, None]
    assert raw.skipped == [{"path": f"{root}/dog/again", "reason": "symlinked folder (not followed)"}]
    spec = ImageSpec(16)
    assert [int(load_image(item.path, spec)[0, 0, 0]) for item in raw.items] == [10, 50, 20, 30, 40]

    flat = sources.load_folder(tmp_path / "raw", labels_from_folders=False)
    assert flat.class_names is None and {item.label for item in flat.items} == {None}


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (7, 10, 12), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], np.uint8)
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, compress)
    assert np.array_equal(sources.read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}"), images)

    raw = sources.load_idx(tmp_path)  # the folder form
    assert np.array_equal(np.stack([item.pixels for item in raw.items]), images)
    assert [item.label for item in raw.items] == labels.tolist()
    assert raw.items[2].ref == f"train-images-idx3-ubyte{suffix}:2"
    assert raw.class_names == [str(d) for d in range(10)]
    direct = sources.load_idx(tmp_path / f"train-images-idx3-ubyte{suffix}")  # the file form
    assert [item.label for item in direct.items] == labels.tolist()

    floats = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(sources.read_idx(write_idx(tmp_path / "f.idx", floats, compress)), floats)


def test_idx_concatenates_train_and_test_files(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.full((3, 8, 8), 1, np.uint8), True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.full((2, 8, 8), 2, np.uint8), True)
    raw = sources.load_idx(tmp_path)
    assert [int(item.pixels[0, 0]) for item in raw.items] == [2, 2, 1, 1, 1]  # name order: t10k, train
    assert raw.class_names is None and {item.label for item in raw.items} == {None}


def test_idx_rejects_bad_magic_and_size_mismatch(tmp_path):
    good = write_idx(tmp_path / "x-images-idx3-ubyte", np.zeros((2, 4, 4), np.uint8), False).read_bytes()
    (tmp_path / "magic").write_bytes(b"\x08\x03" + good[2:])
    with pytest.raises(ResganError, match="bad magic number 0803"):
        sources.read_idx(tmp_path / "magic")
    (tmp_path / "short").write_bytes(good[:-5])
    with pytest.raises(
        ResganError,
        match=r"size mismatch: header says \(2, 4, 4\) x 1 bytes = 32 bytes of data, "
        r"the file has 27",
    ):
        sources.read_idx(tmp_path / "short")
    write_idx(tmp_path / "x-labels-idx1-ubyte", np.zeros(3, np.uint8), False)
    with pytest.raises(ResganError, match="3 labels .* for 2 images"):
        sources.load_idx(tmp_path / "x-images-idx3-ubyte")


def test_npz_uint8_float_and_string_labels(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (5, 9, 9, 3), dtype=np.uint8)
    np.savez(tmp_path / "u8.npz", images=images, labels=np.array([2, 0, 1, 2, 0]))
    raw = sources.load_npz(tmp_path / "u8.npz")
    assert np.array_equal(raw.items[4].pixels, images[4]) and [i.label for i in raw.items] == [2, 0, 1, 2, 0]
    assert raw.items[1].ref == "u8.npz:1" and raw.class_names == ["0", "1", "2"]

    np.savez(tmp_path / "f.npz", images=np.array([[[0.0, 1.0], [0.5, 0.2]]]), labels=np.array(["b"]))
    raw = sources.load_npz(tmp_path / "f.npz")
    assert raw.items[0].pixels.tolist() == [[0, 255], [128, 51]]
    assert raw.class_names == ["b"] and raw.items[0].label == 0

    np.savez(tmp_path / "range.npz", images=np.full((1, 4, 4), 2.0))
    with pytest.raises(ResganError, match=r"must lie in \[0, 1\]"):
        sources.load_npz(tmp_path / "range.npz")
    np.savez(tmp_path / "nokey.npz", pictures=images)
    with pytest.raises(ResganError, match="no 'images' array .*pictures"):
        sources.load_npz(tmp_path / "nokey.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\3\4 not a zip")
    with pytest.raises(ResganError, match="cannot read"):
        sources.load_npz(tmp_path / "junk.npz")


def test_keras_loader_failure_is_a_resgan_error():
    def offline():
        raise Exception("URL fetch failure on https://example.invalid/mnist.npz: [Errno -2]")

    with pytest.raises(ResganError) as caught:
        sources.call_keras_loader(offline, "mnist")
    message = str(caught.value)
    assert "no network" in message and "URL fetch failure" in message
    assert all(name in message for name in ("idx", "folder", "npz"))


def _offline() -> bool:
    try:
        socket.getaddrinfo("storage.googleapis.com", 443)
    except OSError:
        return True
    return False


@pytest.mark.skipif(not _offline(), reason="a network is reachable: a real call would download MNIST")
def test_keras_source_without_network_fails_fast_with_hint():
    cached = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "mnist.npz"
    if cached.exists():
        pytest.skip("MNIST is in the Keras cache; the call would succeed offline")
    with pytest.raises(ResganError, match="could not load Keras dataset 'mnist'.*prepare.source: idx"):
        sources.load_source(prep(source="keras", dataset="mnist"))


def test_missing_path_is_a_clear_error(tmp_path):
    for source in ("folder", "idx", "npz"):
        with pytest.raises(ResganError, match=f"prepare.path: .*nowhere does not exist .*'{source}'"):
            sources.load_source(prep(source=source, path=str(tmp_path / "nowhere")))


# ------------------------------------------------------------------------------------------- split


def test_split_is_deterministic_stratified_and_respects_the_fraction():
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    train, test, stratified = split_indices(labels, 100, 0.2, seed=3)
    again_train, again_test, _ = split_indices(labels, 100, 0.2, seed=3)
    _, other_test, _ = split_indices(labels, 100, 0.2, seed=4)
    assert stratified and len(test) == 20 and len(train) == 80
    assert np.array_equal(test, again_test) and np.array_equal(train, again_train)
    assert not np.array_equal(test, other_test)
    assert sorted(set(train) | set(test)) == list(range(100)) and not set(train) & set(test)
    assert np.bincount(labels[test]).tolist() == [8, 6, 4, 2]  # exactly 20% of every class


def test_split_edge_cases():
    train, test, _ = split_indices(None, 2, 0.9, seed=0)
    assert len(train) == 1 and len(test) == 1  # both splits non-empty, whatever the fraction
    _, test, _ = split_indices(None, 1797, 0.1, seed=0)
    assert len(test) == math.ceil(179.7)
    _, _, stratified = split_indices(np.array([0, 0, 0, 1]), 4, 0.5, seed=0)
    assert not stratified  # a class with a single image cannot be stratified
    with pytest.raises(ResganError, match="at least 2 images"):
        split_indices(None, 1, 0.1, seed=0)


# ----------------------------------------------------------------------------------------- prepare


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}


def test_prepare_digits_outputs(tmp_path, capsys):
    params = prep(max_images=300)
    summary = prepare.run(params, tmp_path)
    train, test = load_npz(tmp_path / "train.npz"), load_npz(tmp_path / "test.npz")
    assert train["images"].shape == (270, 16, 16, 1) and test["images"].shape == (30, 16, 16, 1)
    assert train["images"].dtype == np.uint8 and train["labels"].dtype == np.int64
    assert train["class_names"].tolist() == [str(d) for d in range(10)]

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["counts"] == {"train": 270, "test": 30, "total": 300}
    assert summary["inputs"] == 300 and summary["skipped"] == [] and summary["duplicates"] == 0
    for split, arrays in (("train", train), ("test", test)):
        expected = {str(k): int(v) for k, v in zip(*np.unique(arrays["labels"], return_counts=True))}
        assert summary["class_counts"][split] == expected
    assert summary["stratified"] and all(n == 3 for n in summary["class_counts"]["test"].values())

    digest = DataHasher()  # its formula is pinned by test_data_hasher_is_the_documented_formula
    for split, arrays in (("train", train), ("test", test)):
        for key in ("images", "labels"):
            digest.add(split, key, arrays[key])
    assert summary["data_hash"] == digest.hexdigest()

    from sklearn.datasets import load_digits

    target = load_digits().target
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    assert list(manifest.columns) == ["index", "source", "label", "split", "split_index", "npz_index", "sha256"]
    assert len(manifest) == 300 and manifest["source"].iloc[7] == "digits:7"
    assert (manifest["npz_index"] == manifest["split_index"]).all()  # no npz cap: every image, same rows
    for _, row in manifest.sample(20, random_state=0).iterrows():
        arrays = train if row["split"] == "train" else test
        pixels = arrays["images"][row["split_index"]]
        assert hashlib.sha256(pixels.tobytes()).hexdigest() == row["sha256"]
        assert arrays["labels"][row["split_index"]] == row["label"] == target[int(row["source"].split(":")[1])]

    preview = np.asarray(Image.open(tmp_path / "preview.png"))
    assert preview.shape == (8 * 17 + 1, 8 * 17 + 1)  # 64 tiles of 16 px with 1 px gaps
    assert np.array_equal(preview[1:17, 1:17], train["images"][0, ..., 0])
    assert "270 train + 30 test" in capsys.readouterr().out


def test_prepare_is_deterministic_and_seeded(tmp_path):
    first = prepare.run(prep(max_images=120), tmp_path / "a")
    second = prepare.run(prep(max_images=120), tmp_path / "b")
    reseeded = prepare.run(prep(max_images=120, seed=1), tmp_path / "c")
    assert first["data_hash"] == second["data_hash"] != reseeded["data_hash"]
    assert (tmp_path / "a" / "train.npz").read_bytes() == (tmp_path / "b" / "train.npz").read_bytes()


def make_messy_folder(root: Path) -> None:
    png(root / "ink" / "cmyk.jpg", Image.new("CMYK", (16, 16), (0, 0, 0, 255)))
    png(root / "ink" / "deep.png", Image.fromarray(np.full((16, 16), 65535, np.uint16)))
    alpha = np.zeros((16, 16, 4), np.uint8)
    alpha[..., 3] = 255
    alpha[:, :8] = (255, 255, 255, 255)
    png(root / "paint" / "alpha.png", Image.fromarray(alpha, "RGBA"))
    gif = Image.new("P", (16, 16), 1)
    gif.putpalette([0, 0, 0, 200, 200, 200] + [0] * 762)
    png(root / "paint" / "pal.gif", gif)
    png(root / "paint" / "pal_copy.gif", gif)  # same pixels as pal.gif, sorted after it: a duplicate
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    whole = png(root / "whole.png", noise).read_bytes()
    (root / "ink" / "corrupt.png").write_bytes(whole[: len(whole) // 3])
    (root / "ink" / "zero.png").write_bytes(b"")
    (root / "paint" / "notes.txt").write_text("hello")


def test_prepare_folder_skips_bad_files_with_reasons(tmp_path):
    make_messy_folder(tmp_path / "raw")
    params = prep(source="folder", path=str(tmp_path / "raw"), test_fraction=0.2, max_images=0)
    summary = prepare.run(params, tmp_path / "out")
    root = (tmp_path / "raw").as_posix()
    assert summary["skipped"] == [
        {"path": f"{root}/ink/corrupt.png", "reason": "truncated image"},
        {"path": f"{root}/ink/zero.png", "reason": "zero-byte file"},
        {"path": f"{root}/paint/notes.txt", "reason": "not an image (cannot identify)"},
    ]
    assert summary["duplicates"] == 1 and summary["counts"]["total"] == 5
    assert summary["class_names"] == ["ink", "paint"]

    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
    by_name = {
        Path(s).name: (split, int(i))
        for s, split, i in zip(manifest["source"], manifest["split"], manifest["split_index"])
    }
    assert "pal_copy.gif" not in by_name and manifest.set_index("source")["label"][f"{root}/whole.png"] == ""
    arrays = {s: load_npz(tmp_path / "out" / f"{s}.npz") for s in ("train", "test")}

    def pixels(name):
        split, row = by_name[name]
        return arrays[split]["images"][row, ..., 0]

    assert pixels("cmyk.jpg").max() <= 2  # CMYK pure black -> 0
    assert pixels("deep.png").min() == 255  # 16-bit 65535 -> 255
    assert pixels("alpha.png")[0, 0] == 255 and pixels("alpha.png")[0, 15] == 0
    assert pixels("pal.gif").min() == pixels("pal.gif").max() == 200
    labels = {name: int(arrays[split]["labels"][row]) for name, (split, row) in by_name.items()}
    assert labels == {"cmyk.jpg": 0, "deep.png": 0, "alpha.png": 1, "pal.gif": 1, "whole.png": -1}


def test_parallel_prepare_gives_the_serial_data_hash_manifest_and_skips(tmp_path, monkeypatch):
    """Worker processes (3 files a task, so a 29-file folder is 10 tasks) change nothing on disk:
    the same npz bytes, manifest, skip list, duplicates and data hash as one process, also when
    max_images stops early or a bad file ends the run."""
    from resgan.data import collect as collect_module

    make_messy_folder(tmp_path / "raw")
    rng = np.random.default_rng(1)
    for i in range(20):  # colour JPEGs and PNGs in two more classes, enough for many tasks
        pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        png(
            tmp_path / "raw" / ("photo" if i % 2 else "scan") / f"{i:02d}.{'jpg' if i % 3 else 'png'}",
            Image.fromarray(pixels, "RGB"),
        )
    pools = []

    class CountedPool(collect_module.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pools.append(self)

    monkeypatch.setattr(collect_module, "CHUNK", 3)
    monkeypatch.setattr(collect_module, "ProcessPoolExecutor", CountedPool)
    common = {"source": "folder", "path": str(tmp_path / "raw"), "channels": 3, "test_fraction": 0.2}
    for name, extra in (("all", {}), ("first7", {"max_images": 7})):
        serial = prepare.run(prep(**common, **extra, workers=1), tmp_path / f"{name}_serial")
        assert not pools
        parallel = prepare.run(prep(**common, **extra, workers=2), tmp_path / f"{name}_parallel")
        assert len(pools) == 1
        pools.clear()
        assert parallel == serial  # data hash, skips (with reasons), duplicates, inputs, counts
        for file in ("train.npz", "test.npz", "manifest.csv"):
            assert (tmp_path / f"{name}_parallel" / file).read_bytes() == (
                tmp_path / f"{name}_serial" / file
            ).read_bytes()
    # cmyk, corrupt, deep, zero, alpha, notes, pal, pal_copy (a copy), photo/01, 03, 05: the 7th kept
    assert serial["counts"]["total"] == 7 and serial["inputs"] == 11
    everything = json.loads((tmp_path / "all_parallel" / "summary.json").read_text())
    assert everything["counts"]["total"] == 25 and everything["duplicates"] == 1
    assert [Path(entry["path"]).name for entry in everything["skipped"]] == ["corrupt.png", "zero.png", "notes.txt"]
    with pytest.raises(ResganError, match=r"ink/corrupt.png: truncated image"):
        prepare.run(prep(**common, workers=2, on_bad_image="fail"), tmp_path / "fail")
    assert not (tmp_path / "fail").exists()


def test_on_bad_image_fail_names_the_file(tmp_path):
    make_messy_folder(tmp_path / "raw")
    params = prep(source="folder", path=str(tmp_path / "raw"), on_bad_image="fail")
    with pytest.raises(ResganError, match=r"ink/corrupt.png: truncated image \(prepare.on_bad_image is 'fail'"):
        prepare.run(params, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_prepare_errors_for_empty_and_too_small_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResganError, match="no images found in folder .*empty"):
        prepare.run(prep(source="folder", path=str(tmp_path / "empty")), tmp_path / "out")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.txt").write_text("x")
    with pytest.raises(ResganError, match=r"no usable images .*1 input\(s\) skipped, .*a.txt: not an image"):
        prepare.run(prep(source="folder", path=str(tmp_path / "bad")), tmp_path / "out")
    png(tmp_path / "one" / "a.png", grey(5))
    with pytest.raises(ResganError, match="at least 2 images .* got 1"):
        prepare.run(prep(source="folder", path=str(tmp_path / "one")), tmp_path / "out")


def test_prepare_npz_rgb_without_labels(tmp_path):
    images = np.random.default_rng(3).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", images=images)
    summary = prepare.run(
        prep(source="npz", path=str(tmp_path / "rgb.npz"), channels=3, test_fraction=0.25), tmp_path / "out"
    )
    train, test = load_npz(tmp_path / "out" / "train.npz"), load_npz(tmp_path / "out" / "test.npz")
    assert set(train) == {"images"} and test["images"].shape == (3, 16, 16, 3)
    assert summary["class_names"] is None and summary["class_counts"] is None
    assert not summary["stratified"]
    assert sorted(map(bytes, np.concatenate([train["images"], test["images"]]))) == sorted(map(bytes, images))


# ------------------------------------------------------------------------------ prepared-data files


def test_load_split_round_trip_with_and_without_labels(tmp_path):
    images = np.random.default_rng(5).integers(0, 256, (6, 16, 16, 1), dtype=np.uint8)
    labels = np.array([2, 0, 1, 2, 0, -1], dtype=np.int64)
    np.savez_compressed(tmp_path / "train.npz", images=images, labels=labels, class_names=np.array(["a", "b", "c"]))
    np.savez_compressed(tmp_path / "test.npz", images=images[:2])
    got_images, got_labels = load_split(tmp_path, "train")
    assert got_images.dtype == np.uint8 and np.array_equal(got_images, images)
    assert np.array_equal(got_labels, labels)
    assert load_class_names(tmp_path) == ["a", "b", "c"]
    test_images, test_labels = load_split(tmp_path, "test")
    assert np.array_equal(test_images, images[:2]) and test_labels is None
    assert load_class_names(tmp_path, "test") is None


def test_load_split_names_a_missing_or_unreadable_file(tmp_path):
    with pytest.raises(ResganError, match=r"train\.npz not found: run the prepare stage first"):
        load_split(tmp_path, "train")
    (tmp_path / "train.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ResganError, match=r"train\.npz is not a prepared data file .*run the prepare stage"):
        load_split(tmp_path, "train")
    (tmp_path / "train.npz").write_bytes(b"just text")
    with pytest.raises(ResganError, match=r"train\.npz is not a prepared data file"):
        load_split(tmp_path, "train")
    np.savez(tmp_path / "test.npz", images=np.zeros((2, 4, 4, 1), np.float32))
    with pytest.raises(ResganError, match=r"test\.npz: images must be uint8 NHWC, got float32 \(2, 4, 4, 1\)"):
        load_split(tmp_path, "test")
    np.savez(tmp_path / "test.npz", images=np.zeros((2, 4, 4, 1), np.uint8), labels=np.zeros(3, np.int64))
    with pytest.raises(ResganError, match=r"test\.npz: labels must be 2 integers, got int64 \(3,\)"):
        load_split(tmp_path, "test")


def test_data_hasher_is_the_documented_formula():
    """The one independent check of the data hash formula (checkpoint keys depend on it): sha256 over
    train images, train labels, test images, test labels, each after "<split>/<key>:<dtype>:<shape>;"."""
    train_images = np.arange(2 * 2 * 2 * 1, dtype=np.uint8).reshape(2, 2, 2, 1)
    train_labels = np.array([3, 1], dtype=np.int64)
    test_images = np.full((1, 2, 2, 1), 9, dtype=np.uint8)
    test_labels = np.array([0], dtype=np.int64)
    by_hand = hashlib.sha256(
        b"train/images:|u1:(2, 2, 2, 1);"
        + bytes(range(8))
        + b"train/labels:<i8:(2,);"
        + (3).to_bytes(8, "little")
        + (1).to_bytes(8, "little")
        + b"test/images:|u1:(1, 2, 2, 1);"
        + bytes([9] * 4)
        + b"test/labels:<i8:(1,);"
        + (0).to_bytes(8, "little")
    ).hexdigest()
    hasher = DataHasher()
    hasher.add("train", "images", train_images)
    hasher.add("train", "labels", train_labels)
    hasher.add("test", "images", test_images)
    hasher.add("test", "labels", test_labels)
    assert hasher.hexdigest() == by_hand


def _hash(images: np.ndarray, labels: np.ndarray) -> str:
    hasher = DataHasher()
    hasher.add("train", "images", images)
    hasher.add("train", "labels", labels)
    return hasher.hexdigest()


def test_data_hasher_blocks_equal_one_update_and_any_change_shows():
    images = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 1), dtype=np.uint8)
    labels = np.arange(10, dtype=np.int64) % 3
    whole = _hash(images, labels)
    for block in (1, 3, 4, 10):  # 3 and 4 leave a short last block
        hasher = DataHasher()
        hasher.begin("train", "images", np.uint8, images.shape)
        for start in range(0, len(images), block):
            hasher.update(images[start : start + block])
        hasher.add("train", "labels", labels)
        assert hasher.hexdigest() == whole

    other_label, other_pixel = labels.copy(), images.copy()
    other_label[4] = 2 if labels[4] != 2 else 1
    other_pixel[7, 3, 5, 0] ^= 1
    assert (
        len(
            {whole, _hash(images, other_label), _hash(other_pixel, labels), _hash(images.reshape(10, 8, 32, 1), labels)}
        )
        == 4
    )  # the shape counts too

    short = DataHasher()
    short.begin("train", "images", np.uint8, images.shape)
    short.update(images[:9])
    with pytest.raises(ValueError, match="256 bytes of train/images were never fed"):
        short.hexdigest()
    with pytest.raises(ValueError, match="a int64 block for train/images"):
        short.update(labels)
