"""Bad data, fuzzed: folders of random bytes, truncated, oversized and odd images, symlink loops.

The prepare stage either prepares the good images and lists every bad file with its reason, or
stops with one ResganError. Never another exception, never a hang.
"""

from __future__ import annotations

import io as pyio
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from conftest import tiny_params
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from resgan.errors import ResganError
from resgan.stages.prepare import run


def _png(mode: str, size=(12, 12), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, size, dtype=np.uint16))
    else:
        image = Image.new(mode, size)
        image.putdata(
            [
                tuple(rng.integers(0, 255, len(mode))) if len(mode) > 1 else int(rng.integers(0, 255))
                for _ in range(size[0] * size[1])
            ]
        )
    buffer = pyio.BytesIO()
    image.save(buffer, format="TIFF" if mode == "CMYK" else "PNG")
    return buffer.getvalue()


def _bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header announcing 10^10 pixels (a decompression-bomb sized image) and no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")
    )


GOOD = st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "I;16", "CMYK", "1"])
BAD = st.one_of(
    st.binary(min_size=0, max_size=300).map(lambda b: ("random", b)),
    st.integers(1, 200).map(lambda n: ("truncated", _png("RGB", (20, 20))[:n])),
    st.just(("bomb", _bomb_png())),
    st.just(("tiny", _png("L", (3, 3)))),
)
EXTENSIONS = st.sampled_from([".png", ".jpg", ".gif", ".tif", ".bmp", ".webp", ".txt", "", ".PNG", ".jpeg"])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    good=st.lists(GOOD, min_size=0, max_size=6),
    bad=st.lists(st.tuples(BAD, EXTENSIONS), max_size=6),
    loop=st.booleans(),
    data=st.data(),
)
def test_prepare_lists_bad_files_or_stops_with_one_clear_error(tmp_path_factory, good, bad, loop, data):
    root = tmp_path_factory.mktemp("raw")
    for i, mode in enumerate(good):
        (root / f"good_{i}.{'tif' if mode == 'CMYK' else 'png'}").write_bytes(_png(mode, seed=i))
    for i, ((kind, payload), ext) in enumerate(bad):
        (root / f"bad_{kind}_{i}{ext}").write_bytes(payload)
    if loop:
        os.symlink(root, root / "loop")  # a symlink loop: must not be followed forever
    params = tiny_params(
        prepare={
            "source": "folder",
            "path": str(root),
            "min_size": 8,
            "test_fraction": 0.3,
            "labels_from_folders": False,
            "max_images": 0,
        }
    ).prepare
    out = tmp_path_factory.mktemp("prepared")
    try:
        summary = run(params, out)
    except ResganError as error:
        assert str(error) and "\n" not in str(error)
        assert not (out / "train.npz").exists()  # nothing half-written
        return
    skipped = {Path(entry["path"]).name: entry["reason"] for entry in summary["skipped"]}
    for name, reason in skipped.items():
        assert reason, name
    kept = summary["counts"]["total"] + summary["duplicates"]
    files = len(good) + len(bad)
    assert kept + len([n for n in skipped if n != "loop"]) == files
    for i, ((kind, _), ext) in enumerate(bad):
        if kind in ("bomb", "tiny"):
            assert f"bad_{kind}_{i}{ext}" in skipped
    train = np.load(out / "train.npz")["images"]
    assert train.dtype == np.uint8 and train.shape[1:] == (16, 16, 1)
    assert json.loads((out / "summary.json").read_text())["counts"] == summary["counts"]


def test_a_decompression_bomb_header_is_skipped_with_its_reason(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    (root / "bomb.png").write_bytes(_bomb_png())
    for i in range(4):
        (root / f"ok_{i}.png").write_bytes(_png("L", (16, 16), seed=i))
    params = tiny_params(
        prepare={"source": "folder", "path": str(root), "test_fraction": 0.25, "labels_from_folders": False}
    ).prepare
    summary = run(params, tmp_path / "out")
    assert [Path(s["path"]).name for s in summary["skipped"]] == ["bomb.png"]
    assert "decompression bomb" in summary["skipped"][0]["reason"]
    assert summary["counts"]["total"] == 4
