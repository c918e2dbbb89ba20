"""Train shards for data larger than memory: prepare writes them (chunked, atomic), the train stage
streams them through tf.data, corrupt shards are one clear error. Tiny data: 16x16 images."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tiny_params
from PIL import Image
from project import train_paths

from resgan.config import ParamsError, parse_params
from resgan.data import pipeline, prepared, shards
from resgan.data.prepared import DataHasher
from resgan.errors import ResganError
from resgan.stages import prepare

HERE = Path(__file__).resolve().parent


def prep(**overrides):
    return tiny_params(prepare=overrides).prepare


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}


def all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def rows(images: np.ndarray) -> list[bytes]:
    return sorted(map(bytes, images.reshape(len(images), -1)))


def reference_hash(train: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> str:
    """The data hash of the full splits, each array whole (independent of the streamed computation;
    tests/test_data.py pins the formula itself)."""
    hasher = DataHasher()
    for split, arrays in (("train", train), ("test", test)):
        for key in ("images", "labels"):
            if key in arrays:
                hasher.add(split, key, arrays[key])
    return hasher.hexdigest()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    """300 digits, 270 train images in shards of 50: 5 full shards and one of 20."""
    out = tmp_path_factory.mktemp("sharded") / "prepared"
    prepare.run(prep(max_images=300, shard_size=50), out)
    return out


# ------------------------------------------------------------------------------------------- prepare


def test_shards_round_trip_count_sizes_and_index(sharded):
    index = shards.read_index(sharded)
    names = [f"train-{i:05d}-of-00006.bin" for i in range(6)]
    assert [s.file for s in index.shards] == names and [s.count for s in index.shards] == [50] * 5 + [20]
    assert index.shape == (16, 16, 1) and index.count == 270 and index.record_bytes == 256
    for shard, path in zip(index.shards, index.paths):
        data = path.read_bytes()
        assert len(data) == shard.bytes == shard.count * 256
        assert hashlib.sha256(data).hexdigest() == shard.sha256
    on_disk = json.loads((sharded / "shards" / "index.json").read_text())
    assert on_disk["format"] == "resgan-shards/1" and on_disk["shard_size"] == 50 and on_disk["count"] == 270

    train = load_npz(sharded / "train.npz")
    from_shards = np.concatenate([np.fromfile(p, np.uint8) for p in index.paths]).reshape(-1, 16, 16, 1)
    assert np.array_equal(from_shards, train["images"])  # same pixels, same (split) order
    assert rows(shards.read_images(index)) == rows(train["images"])

    summary = json.loads((sharded / "summary.json").read_text())
    assert summary["shards"] == {"shard_size": 50, "files": 6, "images": 270}
    assert summary["npz_counts"] == {"train": 270, "test": 30}
    assert summary["data_hash"] == reference_hash(train, load_npz(sharded / "test.npz"))
    # atomic writes: no temporary shard, npz or pixel file is left anywhere
    assert all_files(sharded) == sorted(
        [
            "manifest.csv",
            "preview.png",
            "summary.json",
            "test.npz",
            "train.npz",
            "shards/index.json",
            *(f"shards/{n}" for n in names),
        ]
    )


def test_shards_do_not_change_the_npz_or_the_hash(sharded, tmp_path):
    plain = prepare.run(prep(max_images=300), tmp_path / "plain")
    assert (tmp_path / "plain" / "train.npz").read_bytes() == (sharded / "train.npz").read_bytes()
    assert plain["data_hash"] == json.loads((sharded / "summary.json").read_text())["data_hash"]
    index = json.loads((tmp_path / "plain" / "shards" / "index.json").read_text())
    assert index["count"] == 0 and index["shards"] == []  # shards off: the DVC out is an empty index
    assert all_files(tmp_path / "plain" / "shards") == ["index.json"]
    assert pipeline.open_train_data(tmp_path / "plain").mode == "memory"


def test_npz_cap_keeps_a_seeded_sample_and_the_full_hash(sharded, tmp_path):
    capped = prepare.run(prep(max_images=300, shard_size=50, npz_max_images=100), tmp_path / "capped")
    out = tmp_path / "capped"
    full = load_npz(sharded / "train.npz")
    train, test = load_npz(out / "train.npz"), load_npz(out / "test.npz")
    assert train["images"].shape == (100, 16, 16, 1) and len(test["images"]) == 30  # 30 < cap: all
    assert capped["npz_counts"] == {"train": 100, "test": 30} and capped["counts"]["train"] == 270
    assert capped["data_hash"] == json.loads((sharded / "summary.json").read_text())["data_hash"]
    manifest = pd.read_csv(out / "manifest.csv")
    in_train = manifest[(manifest["split"] == "train") & manifest["npz_index"].notna()]
    assert len(in_train) == 100
    chosen = in_train.sort_values("npz_index")["split_index"].to_numpy()
    assert np.array_equal(train["images"], full["images"][chosen])  # the npz rows the manifest names
    assert np.array_equal(train["labels"], full["labels"][chosen])
    assert not np.array_equal(chosen, np.arange(100))  # a sample across the split, not its head
    assert np.array_equal(shards.read_images(shards.read_index(out)), full["images"])  # shards: everything
    again = prepare.run(prep(max_images=300, shard_size=50, npz_max_images=100), tmp_path / "again")
    assert again == capped and (tmp_path / "again" / "train.npz").read_bytes() == (out / "train.npz").read_bytes()

    with pytest.raises(ResganError, match=r"train\.npz holds 100 of the 270 training images .*set train\.input"):
        pipeline.open_train_data(out, "memory")  # a sample is not the training data
    with pytest.raises(ParamsError, match=r"prepare\.npz_max_images: needs shard_size > 0"):
        parse_params({"prepare": {"npz_max_images": 10}})


def make_pngs(root: Path, n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct 16x16 grey PNGs in three class folders, plus one duplicate and one broken file."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 16, 16), dtype=np.uint8)
    for i, image in enumerate(images):
        path = root / f"class{i % 3}" / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    Image.fromarray(images[0]).save(root / "class2" / "copy.png")
    (root / "class1" / "broken.png").write_bytes(b"\x89PNG not really")
    return images


def test_folder_source_writes_in_blocks_and_replaces_stale_shards(tmp_path, monkeypatch):
    images = make_pngs(tmp_path / "raw", 130)
    params = dict(source="folder", path=str(tmp_path / "raw"), max_images=0, test_fraction=0.2)
    reference = prepare.run(prep(**params, shard_size=32), tmp_path / "whole")
    monkeypatch.setattr(prepared, "BLOCK_BYTES", 7 * 256)  # 7 images per block: blocks straddle shards
    summary = prepare.run(prep(**params, shard_size=32), tmp_path / "out")
    out = tmp_path / "out"
    assert summary == reference and summary["duplicates"] == 1
    assert len(summary["skipped"]) == 1 and summary["counts"] == {"train": 104, "test": 26, "total": 130}
    for name in ("train.npz", "test.npz", "manifest.csv"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    index = shards.read_index(out)
    assert [s.count for s in index.shards] == [32, 32, 32, 8]
    train, test = load_npz(out / "train.npz"), load_npz(out / "test.npz")
    assert np.array_equal(shards.read_images(index), train["images"])
    assert rows(np.concatenate([train["images"], test["images"]])) == rows(images[..., None])
    assert summary["data_hash"] == reference_hash(train, test)

    # Another shard size: new files, the old ones (another -of- count) are gone; so is a killed run's debris.
    (out / "shards" / ".train-00000-of-00009.bin.x1y2.tmp").write_bytes(b"half")
    (out / ".prepare-pixels-killed.tmp").write_bytes(b"half")
    prepare.run(prep(**params, shard_size=50), out)
    assert all_files(out / "shards") == [
        "index.json",
        "train-00000-of-00003.bin",
        "train-00001-of-00003.bin",
        "train-00002-of-00003.bin",
    ]
    assert not list(out.glob(".*"))
    assert np.array_equal(shards.read_images(shards.read_index(out)), train["images"])

    changed = make_pngs(tmp_path / "raw", 130, seed=1)  # other pixels under the same names
    assert not np.array_equal(changed, images)
    assert prepare.run(prep(**params, shard_size=50), out)["data_hash"] != summary["data_hash"]


def test_a_failed_prepare_leaves_no_temporary_files(tmp_path, monkeypatch):
    original = shards.ShardWriter.add
    calls = []

    def add_then_fail(self, block):
        calls.append(len(block))
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        original(self, block)

    monkeypatch.setattr(prepared, "BLOCK_BYTES", 20 * 256)
    monkeypatch.setattr(shards.ShardWriter, "add", add_then_fail)
    out = tmp_path / "out"
    prepare.run(prep(max_images=300), out)  # an earlier good run, without shards
    before = {name: (out / name).read_bytes() for name in all_files(out)}
    with pytest.raises(OSError, match="No space left"):
        prepare.run(prep(max_images=300, shard_size=32), out)
    assert len(calls) == 3
    # the first complete shard may have landed (renamed into place), nothing half-written did:
    leftovers = set(all_files(out)) - set(before)
    assert leftovers <= {"shards/train-00000-of-00009.bin"}
    assert {name: (out / name).read_bytes() for name in before} == before  # old outputs untouched
    assert shards.read_index(out).count == 0  # the old index still rules


def test_shard_writer_removes_an_unfinished_shard(tmp_path):
    block = np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2, 1)
    with pytest.raises(RuntimeError):
        with shards.ShardWriter(tmp_path, total=25, shard_size=8, shape=(2, 2, 1)) as writer:
            writer.add(block)  # 8 in shard 0 (closed), 2 in shard 1 (open)
            raise RuntimeError("stop")
    assert all_files(tmp_path) == ["train-00000-of-00004.bin"]
    assert (tmp_path / "train-00000-of-00004.bin").read_bytes() == block[:8].tobytes()
    with pytest.raises(ValueError, match="got 10 images, expected 25"):
        with shards.ShardWriter(tmp_path / "b", total=25, shard_size=8, shape=(2, 2, 1)) as writer:
            writer.add(block)


# ------------------------------------------------------------------------------------- corrupt shards


@pytest.fixture
def sharded_copy(sharded, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(sharded, tmp_path / "prepared"))


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", r"shard .*train-00003-of-00006\.bin is truncated or altered: 12000 bytes, index\.json says 12800"),
        ("flip", r"shard .*train-00003-of-00006\.bin is corrupt: its SHA-256 differs from index\.json"),
        ("delete", r"shard .*train-00003-of-00006\.bin is missing"),
    ],
)
def test_damaged_shard_is_one_clear_error_naming_the_file(sharded_copy, damage, message):
    path = sharded_copy / "shards" / "train-00003-of-00006.bin"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[:12000]))
    elif damage == "flip":
        data[777] ^= 0x10
        path.write_bytes(bytes(data))
    else:
        path.unlink()
    with pytest.raises(ResganError, match=message) as caught:
        pipeline.open_train_data(sharded_copy)
    assert "re-run the prepare stage" in str(caught.value)


def test_bad_index_and_wrong_input_mode(sharded_copy, tmp_path):
    index = sharded_copy / "shards" / "index.json"
    index.write_text("{not json")
    with pytest.raises(ResganError, match=r"index\.json is unreadable"):
        pipeline.open_train_data(sharded_copy)
    index.write_text(json.dumps({"format": "resgan-shards/1", "shards": []}))
    with pytest.raises(ResganError, match=r"index\.json is not a shard index \(KeyError"):
        pipeline.open_train_data(sharded_copy)

    prepare.run(prep(max_images=100), tmp_path / "plain")
    with pytest.raises(ResganError, match=r"train\.input is 'stream' but .*index\.json lists no shards"):
        pipeline.open_train_data(tmp_path / "plain", "stream")
    (tmp_path / "plain" / "shards" / "index.json").unlink()  # data prepared before shards existed
    assert pipeline.open_train_data(tmp_path / "plain").mode == "memory"
    with pytest.raises(ResganError, match=r"index\.json does not exist"):
        pipeline.open_train_data(tmp_path / "plain", "stream")


# ------------------------------------------------------------------------------------------ streaming


def take(dataset, n: int) -> np.ndarray:
    return np.concatenate([batch.numpy() for batch, _ in zip(dataset, range(n))])


def as_uint8(batches: np.ndarray) -> np.ndarray:
    return np.rint((batches + 1.0) * 127.5).astype(np.uint8)


def test_stream_dataset_batches_epochs_and_seeds(sharded):
    data = pipeline.open_train_data(sharded)
    assert (data.mode, data.count, data.image_size, data.channels, data.images) == ("stream", 270, 16, 1, None)
    truth = rows(shards.read_images(data.index))
    first = next(iter(data.dataset(10, seed=5, shuffle_buffer=16)))
    assert first.shape == (10, 16, 16, 1) and first.dtype.name == "float32"
    assert float(first.numpy().min()) >= -1.0 and float(first.numpy().max()) <= 1.0

    # 270 images in batches of 10: batches 0-26 are epoch 1, 27-53 epoch 2; each epoch is every image once.
    images = take(data.dataset(10, seed=5, shuffle_buffer=16), 54)
    epoch1, epoch2 = as_uint8(images[:270]), as_uint8(images[270:])
    assert np.abs((images + 1.0) * 127.5 - np.concatenate([epoch1, epoch2])).max() < 1e-3  # x / 127.5 - 1
    assert rows(epoch1) == truth and rows(epoch2) == truth
    assert not np.array_equal(epoch1, epoch2)  # reshuffled every epoch
    assert np.array_equal(images, take(data.dataset(10, seed=5, shuffle_buffer=16), 54))  # deterministic
    assert not np.array_equal(images[:270], take(data.dataset(10, seed=6, shuffle_buffer=16), 27))
    resumed = take(data.dataset(10, seed=5, epoch_offset=4, shuffle_buffer=16), 27)
    assert not np.array_equal(images[:270], resumed) and rows(as_uint8(resumed)) == truth
    # a buffer of 16 images mixes shards (2 read at a time at least) but cannot move an image far back:
    in_order = np.concatenate([np.arange(50)] * 5 + [np.arange(20)])  # position inside its shard
    position = {row: pos for row, pos in zip(map(bytes, shards.read_images(data.index).reshape(270, -1)), in_order)}
    assert max(position[bytes(row)] for row in epoch1[:10].reshape(10, -1)) < 10  # a full shuffle: up to 49
    with pytest.raises(ResganError, match="batch_size 300 is larger than the 270 training images"):
        data.dataset(300, seed=0)


@pytest.mark.slow  # runs the train stage or a mirrored strategy
def test_stream_dataset_under_mirrored_strategy(sharded):
    """Two logical CPUs (set before TensorFlow starts, hence a child process): every replica gets its
    half of the global batch, and together they are the batch the undistributed dataset gives."""
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from resgan.data.pipeline import open_train_data
        data = open_train_data({str(sharded)!r})
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        it = iter(strategy.experimental_distribute_dataset(data.dataset(8, seed=3, shuffle_buffer=32)))
        plain = iter(data.dataset(8, seed=3, shuffle_buffer=32))
        out = []
        for _ in range(3):
            parts = [t.numpy() for t in strategy.experimental_local_results(next(it))]
            out.append({{"shapes": [list(p.shape) for p in parts],
                        "equal": bool(np.array_equal(np.concatenate(parts), next(plain).numpy()))}})
        print("RESULT " + json.dumps(out))
    """)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert out == [{"shapes": [[4, 16, 16, 1], [4, 16, 16, 1]], "equal": True}] * 3


# ------------------------------------------------------------------------------------ the train stage


def make_project(root: Path, data: Path, **train) -> tuple:
    import shutil

    params = tiny_params(train={"steps": 3, "checkpoint_every": 3, "sample_every": 3, **train})
    shutil.copytree(data, root / "data" / "prepared")
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    return params, root / "data" / "prepared"


def run_train(root: Path, params, data: Path) -> dict:
    from resgan.stages import train

    return train.run(
        params,
        train_paths(root, data),
    )


@pytest.mark.slow  # runs the train stage or a mirrored strategy
def test_train_stage_streams_shards_without_train_npz(sharded, tmp_path, monkeypatch, capsys):
    params, data = make_project(tmp_path, sharded)
    (data / "train.npz").unlink()  # streaming must not need it
    monkeypatch.chdir(tmp_path)
    figures = run_train(tmp_path, params, data)
    assert figures["steps"] == 3 and np.isfinite(figures["loss_d"]) and np.isfinite(figures["loss_g"])
    assert "streaming 270 images from 6 shard(s)" in capsys.readouterr().out
    assert (tmp_path / "models" / "generator.keras").is_file()

    memory = tiny_params(train={"steps": 3, "input": "memory"})
    with pytest.raises(ResganError, match=r"train\.npz not found"):
        run_train(tmp_path, memory, data)


@pytest.mark.slow  # runs the train stage or a mirrored strategy
def test_train_stage_stops_on_a_truncated_shard_before_training(sharded, tmp_path, monkeypatch):
    params, data = make_project(tmp_path, sharded)
    shard = data / "shards" / "train-00005-of-00006.bin"
    shard.write_bytes(shard.read_bytes()[:-1])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ResganError, match=r"train-00005-of-00006\.bin is truncated or altered: 5119 bytes"):
        run_train(tmp_path, params, data)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "models").exists()
