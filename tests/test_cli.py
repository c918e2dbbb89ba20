"""``resgan generate``, ``resgan interpolate`` and ``resgan models``.

Library behaviour (formats, pixels, seeds, --force, latent walks) runs in-process; exit codes and
one-line errors run ``resgan`` as a subprocess, since the process boundary is the behaviour. The
``slow`` tests start a real ``mlflow server`` and a real ``mlflow models serve``.
"""

from __future__ import annotations

import base64
import io as pyio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow_server import MlflowServer, free_port, start_server, stop_server
from PIL import Image
from test_registry import LATENT, SIZE, Store, registry_store

pytestmark = pytest.mark.slow  # resgan commands in subprocesses, each starting TensorFlow

BIN = Path(sys.executable).parent  # the venv's bin: resgan, mlflow and uvicorn live here
CELL = SIZE + 1  # files.image_grid: one pixel of padding between and around the tiles


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return registry_store(tmp_path_factory)


@pytest.fixture
def use_store(store, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    mlflow.set_tracking_uri(store.uri)
    yield store
    mlflow.set_tracking_uri(None)


def resgan(*args: str, cwd: Path, tracking_uri: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("DVC_ROOT", None)
    return subprocess.run(
        [str(BIN / "resgan"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def shrink(picture: np.ndarray, factor: int) -> np.ndarray:
    """Undo a nearest-neighbour enlargement by ``factor``, checking that every block is one pixel."""
    small = picture[::factor, ::factor]
    np.testing.assert_array_equal(picture, small.repeat(factor, axis=0).repeat(factor, axis=1))
    return small


def tiles(grid: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Cut a files.image_grid at true size back into its (rows * columns, SIZE, SIZE) tiles."""
    return np.stack(
        [
            grid[1 + r * CELL : 1 + r * CELL + SIZE, 1 + c * CELL : 1 + c * CELL + SIZE]
            for r in range(rows)
            for c in range(columns)
        ]
    )


def draw(store: Store, out: Path, **options):
    from resgan.generate import generate

    return generate(str(store.trained_file), out, **options)


def npz_images(path: Path) -> np.ndarray:
    with np.load(path) as data:
        return data["images"]


# ---------------------------------------------------------------- generate: formats and pixels


def test_npz_holds_uint8_nhwc_images_and_the_seed(store, tmp_path):
    result = draw(store, tmp_path / "a.npz", num=10, seed=3, batch_size=4)
    assert result.count == 10 and result.format == "npz"
    with np.load(tmp_path / "a.npz") as data:
        assert set(data.files) == {"images", "seed"} and int(data["seed"]) == 3
        images = data["images"]
    assert images.shape == (10, SIZE, SIZE, 1) and images.dtype == np.uint8
    assert images.std() > 0, "an all-constant output is no image"


def test_same_seed_same_pixels_other_seed_other_pixels(store, tmp_path):
    draw(store, tmp_path / "a.npz", num=6, seed=3)
    draw(store, tmp_path / "b.npz", num=6, seed=3, batch_size=4)  # the batch size does not matter
    draw(store, tmp_path / "c.npz", num=6, seed=4)
    a, b, c = (npz_images(tmp_path / f"{n}.npz") for n in "abc")
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.5
    from resgan.loading import load_generator
    from resgan.sampling import draw as sample_stage_draw  # what the sample stage draws

    stage_images, stage_labels = sample_stage_draw(load_generator(store.trained_file), 6, 3, 256)
    np.testing.assert_array_equal(a, stage_images)
    assert stage_labels is None  # an unconditional generator


def test_grid_png_size_and_tiles(store, tmp_path):
    draw(store, tmp_path / "ref.npz", num=10, seed=5)
    result = draw(store, tmp_path / "grid.png", num=10, seed=5, scale=1)
    assert result.format == "grid"
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    # 10 images: ceil(sqrt(10)) = 4 columns, 3 rows, 1 pixel of padding -> 4*17+1 by 3*17+1
    assert grid.shape == (3 * CELL + 1, 4 * CELL + 1) and grid.dtype == np.uint8
    np.testing.assert_array_equal(tiles(grid, 3, 4)[:10], npz_images(tmp_path / "ref.npz")[..., 0])
    draw(store, tmp_path / "wide.png", num=10, seed=5, columns=10, scale=2)
    assert Image.open(tmp_path / "wide.png").size == (2 * (10 * CELL + 1), 2 * (CELL + 1))


def test_grid_is_enlarged_to_be_seen_and_the_npz_keeps_true_pixels(store, tmp_path):
    draw(store, tmp_path / "ref.npz", num=10, seed=5)
    result = draw(store, tmp_path / "grid.png", num=10, seed=5)  # the default: at least 512 px across
    big = np.asarray(Image.open(tmp_path / "grid.png"))
    # 69 px of true grid: the smallest integer factor reaching 512 is 8 (7 gives 483), so 552 x 416
    assert big.shape == (8 * (3 * CELL + 1), 8 * (4 * CELL + 1)) and result.shape == (552, 416)
    np.testing.assert_array_equal(tiles(shrink(big, 8), 3, 4)[:10], npz_images(tmp_path / "ref.npz")[..., 0])
    assert npz_images(tmp_path / "ref.npz").shape == (10, SIZE, SIZE, 1)
    draw(store, tmp_path / "wide.png", num=40, seed=5, columns=40)  # 681 px: already wide enough
    assert Image.open(tmp_path / "wide.png").size == (40 * CELL + 1, CELL + 1)


def test_folder_of_pngs(store, tmp_path):
    draw(store, tmp_path / "ref.npz", num=7, seed=2)
    result = draw(store, tmp_path / "pngs", num=7, seed=2, batch_size=3)
    assert result.format == "folder" and result.count == 7
    names = sorted(p.name for p in (tmp_path / "pngs").iterdir())
    assert names == [f"{i:06d}.png" for i in range(7)]
    pictures = np.stack([np.asarray(Image.open(tmp_path / "pngs" / n)) for n in names])
    np.testing.assert_array_equal(pictures, npz_images(tmp_path / "ref.npz")[..., 0])
    draw(store, tmp_path / "named.png.d", num=2, fmt="folder")
    assert len(list((tmp_path / "named.png.d").iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["named.png.d", "pngs", "ref.npz"], "no temporary leftovers"


def test_truncation_keeps_latents_inside_and_changes_the_images(store, tmp_path):
    from scipy.stats import kstest, truncnorm

    from resgan.sampling import latents

    z = latents(2000, LATENT, 0, 0.5)
    assert np.abs(z).max() <= 0.5
    assert kstest(z.ravel(), truncnorm(-0.5, 0.5).cdf).pvalue > 1e-3  # exactly truncated-normal
    # Row i depends on the seed and i only: a longer draw extends a shorter one, with or without truncation.
    np.testing.assert_array_equal(latents(3, LATENT, 9, 0.5), latents(50, LATENT, 9, 0.5)[:3])
    np.testing.assert_array_equal(latents(3, LATENT, 9), latents(50, LATENT, 9)[:3])
    draw(store, tmp_path / "t.npz", num=4, seed=1, truncation=0.5)
    draw(store, tmp_path / "u.npz", num=4, seed=1)
    assert (npz_images(tmp_path / "t.npz") != npz_images(tmp_path / "u.npz")).any()


def test_force_replaces_and_nothing_is_replaced_without_it(store, tmp_path):
    from resgan.outputs import OutputError

    out = tmp_path / "g.png"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="exists; pass --force"):
        draw(store, out, num=4)
    assert out.read_bytes() == b"keep me"
    draw(store, out, num=4, force=True, scale=1)
    assert Image.open(out).size == (2 * CELL + 1, 2 * CELL + 1)

    folder = tmp_path / "pngs"
    draw(store, folder, num=5)
    draw(store, folder, num=2, force=True)
    assert sorted(p.name for p in folder.iterdir()) == ["000000.png", "000001.png"]
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="did not write"):
        draw(store, folder, num=2, force=True)
    assert (folder / "notes.txt").read_text() == "mine"
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        draw(store, tmp_path / "dir.png", num=2, force=True)


def test_a_failed_folder_write_leaves_nothing_and_keeps_the_old_output(tmp_path):
    from resgan.outputs import write_folder

    def batches():
        yield np.zeros((3, SIZE, SIZE, 1), np.uint8)
        raise RuntimeError("generator crashed")

    with pytest.raises(RuntimeError):
        write_folder(tmp_path / "new", batches(), force=False)
    old = tmp_path / "old"
    old.mkdir()
    (old / "000000.png").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        write_folder(old, batches(), force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    assert (old / "000000.png").read_bytes() == b"old"


# ---------------------------------------------------------------- interpolate


def test_slerp_follows_the_great_circle():
    from scipy.spatial import geometric_slerp

    from resgan.sampling import slerp

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(LATENT), 2.0 * rng.standard_normal(LATENT)
    t = np.linspace(0, 1, 7)
    walk = slerp(a, b, t).astype(np.float64)
    np.testing.assert_allclose(walk[0], a, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(walk[-1], b, rtol=1e-6, atol=1e-6)
    norms = np.linalg.norm(walk, axis=1)
    np.testing.assert_allclose(norms, (1 - t) * np.linalg.norm(a) + t * np.linalg.norm(b), rtol=1e-6)
    directions = geometric_slerp(a / np.linalg.norm(a), b / np.linalg.norm(b), t)
    np.testing.assert_allclose(walk / norms[:, None], directions, atol=1e-6)
    same = slerp(a, a, t)  # parallel: falls back to a straight line, no division by zero
    assert np.isfinite(same).all()
    np.testing.assert_allclose(same, np.tile(a, (7, 1)), rtol=1e-6)


def test_interpolate_grid_rows_are_pairs_and_ends_are_the_seeds_images(store, tmp_path):
    from resgan.generate import interpolate

    result = interpolate(str(store.trained_file), tmp_path / "walk.png", [1, 5, 9], steps=4)
    assert result.format == "grid" and result.count == 8
    grid = np.asarray(Image.open(tmp_path / "walk.png"))
    # 69 px wide at true size: enlarged 8 times to be seen (the smallest factor reaching 512 px)
    assert grid.shape == (8 * (2 * CELL + 1), 8 * (4 * CELL + 1)) and result.shape == (552, 280)
    cut = tiles(shrink(grid, 8), 2, 4)
    for seed, index in ((1, 0), (5, 3), (5, 4), (9, 7)):
        draw(store, tmp_path / f"s{seed}.npz", num=1, seed=seed, force=True)
        image = npz_images(tmp_path / f"s{seed}.npz")[0, ..., 0].astype(int)
        assert np.abs(cut[index].astype(int) - image).max() <= 1, (seed, index)
    assert (cut[1] != cut[0]).any() and (cut[1] != cut[3]).any()


def test_interpolate_gif_is_one_continuous_walk(store, tmp_path):
    from resgan.generate import interpolate

    result = interpolate(str(store.trained_file), tmp_path / "walk.gif", [1, 5, 9], steps=4, scale=3, duration_ms=50)
    gif = Image.open(tmp_path / "walk.gif")
    assert gif.format == "GIF" and gif.n_frames == 7 == result.count  # 4 + 3: the shared end is not repeated
    assert gif.size == (3 * SIZE, 3 * SIZE) and gif.info["loop"] == 0 and gif.info["duration"] == 50
    interpolate(str(store.trained_file), tmp_path / "seen.gif", [1, 5], steps=3)  # default: 512 px frames
    seen = Image.open(tmp_path / "seen.gif")
    assert seen.size == (512, 512) and seen.n_frames == 3
    seen.seek(2)
    last = shrink(np.asarray(seen.convert("L")), 32)  # 16 px x 32; the walk ends on seed 5's image
    draw(store, tmp_path / "s5.npz", num=1, seed=5)
    assert np.abs(last.astype(int) - npz_images(tmp_path / "s5.npz")[0, ..., 0]).max() <= 1


# ---------------------------------------------------------------- the command line: success


def test_cli_generate_by_alias_matches_the_library(store, tmp_path):
    done = resgan(
        "generate",
        "--model",
        "models:/resgan@champion",
        "--num",
        "10",
        "--seed",
        "3",
        "--out",
        "x.npz",
        cwd=tmp_path,
        tracking_uri=store.uri,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote 10 images (10x{SIZE}x{SIZE}x1) -> x.npz" and done.stderr == ""
    draw(store, tmp_path / "ref.npz", num=10, seed=3)
    np.testing.assert_array_equal(npz_images(tmp_path / "x.npz"), npz_images(tmp_path / "ref.npz"))


def test_cli_interpolate_writes_a_gif(store, tmp_path):
    done = resgan(
        "interpolate",
        "--model",
        store.trained_id,
        "--seeds",
        "1,5",
        "--steps",
        "3",
        "--out",
        "w.gif",
        cwd=tmp_path,
        tracking_uri=store.uri,
    )
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "w.gif").n_frames == 3


def test_cli_models_list_show_promote(store, tmp_path):
    listed = resgan("models", "list", cwd=tmp_path, tracking_uri=store.uri)
    assert listed.returncode == 0, listed.stderr
    assert "resgan: 2 versions" in listed.stdout and "eval/fid_classifier" in listed.stdout
    rows = json.loads(resgan("models", "list", "--json", cwd=tmp_path, tracking_uri=store.uri).stdout)
    assert {r["version"]: r["aliases"] for r in rows} == {2: ["candidate"], 1: ["champion"]}
    shown = resgan("models", "show", "champion", cwd=tmp_path, tracking_uri=store.uri)
    assert shown.returncode == 0 and shown.stdout.startswith("resgan version 1\n")
    assert f"source:      {store.trained_uri}" in shown.stdout and "eval/fid_classifier  10.0" in shown.stdout
    try:
        promoted = resgan("models", "promote", "2", "--alias", "cli-test", cwd=tmp_path, tracking_uri=store.uri)
        assert promoted.returncode == 0 and promoted.stdout.strip() == "resgan v2 is now cli-test"
        again = json.loads(resgan("models", "show", "cli-test", "--json", cwd=tmp_path, tracking_uri=store.uri).stdout)
        assert again["version"] == 2 and again["aliases"] == ["candidate", "cli-test"]
    finally:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=store.uri).delete_registered_model_alias("resgan", "cli-test")
    (tmp_path / "params.yaml").write_text("mlflow:\n  registered_model: rules-absent\n")
    named = resgan("models", "list", cwd=tmp_path, tracking_uri=store.uri)
    assert named.returncode == 1 and "no registered model named 'rules-absent'" in named.stderr


def test_help_does_not_import_tensorflow_or_mlflow(tmp_path):
    for args in (["--help"], ["generate", "--help"], ["models", "list", "--help"]):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "resgan", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0
        imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
        assert not imported & {"tensorflow", "keras", "mlflow"}, args


def test_generate_from_a_model_file_does_not_import_mlflow(store, tmp_path):
    """A local .keras file needs no tracking store: MLflow's import (1.6 s in one run under load) is left out.
    (TensorFlow starts with stderr silenced, so its imports are not in the list.)"""
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "resgan",
            "generate",
            "--model",
            str(store.trained_file),
            "--num",
            "5",
            "--out",
            "five.npz",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert {"resgan", "numpy", "rich"} <= imported and "mlflow" not in imported
    with np.load(tmp_path / "five.npz") as written:
        assert written["images"].shape == (5, SIZE, SIZE, 1)


# ---------------------------------------------------------------- the command line: errors


def _error_cases(store: Store, tmp: Path) -> list[tuple[str, list[str], int, str]]:
    (tmp / "exists.png").write_bytes(b"x")
    (tmp / "a-file").write_text("x")
    (tmp / "junk.keras").write_bytes(os.urandom(300))
    model = ["--model", str(store.trained_file)]
    return [
        ("num 0", ["generate", *model, "--num", "0", "--out", "o.png"], 2, "--num must be from 1 to 1,000,000, got 0"),
        ("num absurd", ["generate", *model, "--num", "5000000", "--out", "o.png"], 2, "--num must be from 1"),
        (
            "truncation 0",
            ["generate", *model, "--truncation", "0", "--out", "o.png"],
            2,
            "--truncation must be a positive",
        ),
        ("unknown suffix", ["generate", *model, "--out", "o.jpg"], 2, "cannot tell the output format of o.jpg"),
        ("format clash", ["generate", *model, "--format", "npz", "--out", "o.png"], 2, "--format npz writes a .npz"),
        ("exists", ["generate", *model, "--out", "exists.png"], 1, "exists.png exists; pass --force to replace it"),
        (
            "unwritable",
            ["generate", *model, "--out", "a-file/o.png"],
            1,
            "cannot write a-file/o.png: a-file is not a folder",
        ),
        ("missing file", ["generate", "--model", "missing.keras", "--out", "o.png"], 1, "missing.keras not found"),
        (
            "random file",
            ["generate", "--model", "junk.keras", "--out", "o.png"],
            1,
            "junk.keras is not a Keras model file",
        ),
        (
            "classifier",
            ["generate", "--model", str(store.classifier), "--out", "o.png"],
            1,
            "is not a generator: it maps",
        ),
        (
            "unknown model",
            ["generate", "--model", "models:/nomodel@champion", "--out", "o.png"],
            1,
            "cannot resolve model models:/nomodel@champion",
        ),
        ("missing alias", ["generate", "--model", "models:/resgan@nope", "--out", "o.png"], 1, "alias nope not found"),
        (
            "missing version",
            ["generate", "--model", "models:/resgan/99", "--out", "o.png"],
            1,
            "cannot resolve model models:/resgan/99",
        ),
        ("one seed", ["interpolate", *model, "--seeds", "3", "--out", "o.gif"], 2, "--seeds needs at least two seeds"),
        ("bad seeds", ["interpolate", *model, "--seeds", "1,x", "--out", "o.gif"], 2, "--seeds must be integers"),
        ("models show", ["models", "show", "99"], 1, "resgan has no version 99 (versions 1 to 2)"),
        ("models promote", ["models", "promote", "nope"], 1, "resgan has no alias 'nope'"),
        ("models unknown", ["models", "list", "--name", "nomodel"], 1, "no registered model named 'nomodel'"),
    ]


CASES = [
    "num 0",
    "num absurd",
    "truncation 0",
    "unknown suffix",
    "format clash",
    "exists",
    "unwritable",
    "missing file",
    "random file",
    "classifier",
    "unknown model",
    "missing alias",
    "missing version",
    "one seed",
    "bad seeds",
    "models show",
    "models promote",
    "models unknown",
]


@pytest.mark.parametrize("case", CASES)
def test_errors_are_one_line_with_an_exit_code(store, tmp_path, case):
    cases = {c[0]: c[1:] for c in _error_cases(store, tmp_path)}
    args, code, message = cases[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    done = resgan(*args, cwd=tmp_path, tracking_uri=store.uri)
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing written, nothing half-written"
    assert (tmp_path / "exists.png").read_bytes() == b"x"


@pytest.mark.parametrize(
    "args", [["generate", "--model", "models:/resgan@champion", "--out", "o.png"], ["models", "list"]]
)
def test_an_unreachable_tracking_server_is_one_line(tmp_path, args):
    done = resgan(*args, cwd=tmp_path, tracking_uri=f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is unreachable" in lines[0] and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_missing_local_store_is_not_created(tmp_path):
    done = resgan("generate", "--out", "o.png", cwd=tmp_path, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert done.returncode == 1 and "no MLflow store at" in done.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- servers (slow)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra)
    env.pop("DVC_ROOT", None)
    return env


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 with its own SQLite store and proxied artifacts."""
    with MlflowServer(tmp_path_factory.mktemp("server"), env=_env()) as server:
        yield server.uri


@pytest.mark.slow
def test_generate_against_a_tracking_server(store, tracking_server, tmp_path, monkeypatch):
    import mlflow

    from resgan import model_registry, serving
    from resgan.loading import load_generator

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    mlflow.set_tracking_uri(tracking_server)
    try:
        # (Not mlflow.set_experiment: it would leave this store's experiment id active for later tests.)
        experiment_id = mlflow.MlflowClient().create_experiment("resgan")
        with mlflow.start_run(experiment_id=experiment_id) as run:
            uri = serving.log_model(load_generator(store.trained_file), name="generator").model_uri
        outcome = model_registry.register(
            uri, "resgan", "fid", "fid_classifier", {"fid_classifier": 5.0}, {}, run_id=run.info.run_id
        )
        assert outcome.aliases == ("candidate", "champion")
    finally:
        mlflow.set_tracking_uri(None)

    done = resgan(
        "generate",
        "--model",
        "models:/resgan@champion",
        "--num",
        "6",
        "--seed",
        "11",
        "--out",
        "s.npz",
        cwd=tmp_path,
        tracking_uri=tracking_server,
    )
    assert done.returncode == 0, done.stderr
    draw(store, tmp_path / "ref.npz", num=6, seed=11)
    np.testing.assert_array_equal(npz_images(tmp_path / "s.npz"), npz_images(tmp_path / "ref.npz"))
    listed = resgan("models", "show", "champion", "--json", cwd=tmp_path, tracking_uri=tracking_server)
    assert json.loads(listed.stdout)["source"] == uri
    missing = resgan(
        "generate", "--model", "models:/resgan@nope", "--out", "n.png", cwd=tmp_path, tracking_uri=tracking_server
    )
    assert missing.returncode == 1 and "alias nope not found" in missing.stderr
    assert "Traceback" not in missing.stderr and not (tmp_path / "n.png").exists()


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
def test_mlflow_models_serve_answers_seeds_with_the_images_generate_draws(store, tmp_path):
    port = free_port()
    process = start_server(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/resgan@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env=_env(MLFLOW_TRACKING_URI=store.uri),
        probe=f"http://127.0.0.1:{port}/ping",
        log=tmp_path / "serve.log",
    )
    try:
        url = f"http://127.0.0.1:{port}/invocations"
        status, answer = _post(url, {"dataframe_split": {"columns": ["seed"], "data": [[1], [2]]}})
        assert status == 200, answer
        assert [p["seed"] for p in answer["predictions"]] == [1, 2]
        png = Image.open(pyio.BytesIO(base64.b64decode(answer["predictions"][0]["image"])))
        assert png.format == "PNG" and png.size == (SIZE, SIZE)

        status, arrays = _post(url, {"inputs": {"seed": [1, 2]}, "params": {"format": "array"}})
        assert status == 200
        served = np.asarray([p["image"] for p in arrays["predictions"]], dtype=np.uint8)
        assert served.shape == (2, SIZE, SIZE, 1)
        np.testing.assert_array_equal(served[0, ..., 0], np.asarray(png))

        for seed in (1, 2):
            draw(store, tmp_path / f"g{seed}.npz", num=1, seed=seed)
            np.testing.assert_array_equal(served[seed - 1], npz_images(tmp_path / f"g{seed}.npz")[0])

        status, error = _post(url, {"inputs": {"seed": [-3]}})
        assert status == 400 and error["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "seeds must be non-negative integers" in error["message"]
    finally:
        stop_server(process)
