"""The prepare stage: a source in, ``train.npz``/``test.npz`` + shards, manifest, summary and preview out.

Steps: load the source (:mod:`resgan.data.sources`); convert each image, skip bad files with a
reason (or end the run with ``on_bad_image: fail``), drop exact duplicates, stop at ``max_images``
kept images and split train/test deterministically (:mod:`resgan.data.collect`); write the split
files, the train shards and the data hash from the temporary pixel file a block at a time
(:mod:`resgan.data.prepared`); then the manifest, the preview and, last, the summary, all atomically.

Memory: converted pixels never pile up in memory (they wait in a temporary pixel file beside the
outputs). What still grows with the data set is per-image bookkeeping (the source's item list, one
SHA-256 per image, the manifest), about 1 KB per image for a folder, and, for the in-memory sources
(digits, idx, npz, keras), the source arrays themselves.
"""

from __future__ import annotations

from pathlib import Path

from resgan import files
from resgan.config import PrepareParams
from resgan.data.collect import Collected, available_cpus, collect, plan_splits
from resgan.data.images import RESIZE_METHOD, ImageSpec
from resgan.data.prepared import PixelFile, Split, Written, remove_spill_files, write_splits
from resgan.data.sources import describe_source, load_source

PARAMS = ("prepare",)  # the params this stage reads (its section): dvc.yaml gives it the same
PREVIEW_IMAGES = 64


def run(params: PrepareParams, out_dir: Path) -> dict:
    """Prepare the data described by ``params`` into ``out_dir``; returns the summary dict.

    Writes ``train.npz`` and ``test.npz`` (``images`` uint8 NHWC, ``labels`` int64 and
    ``class_names`` when known), ``shards/`` (the train split as shard files when
    ``shard_size > 0``; always its ``index.json``), ``manifest.csv``, ``summary.json`` and
    ``preview.png``. Raises :class:`resgan.data.prepared.PrepareError` (a ResganError) for an empty
    or too small result, or for the first bad file when ``on_bad_image`` is ``fail``.
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    if not created:
        remove_spill_files(out_dir)  # left by a killed run
    spec = ImageSpec.from_params(params)
    pixels = PixelFile(out_dir, spec.shape)
    try:
        return _prepare(params, out_dir, spec, pixels)
    finally:
        pixels.close()
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a failed run leaves nothing behind


def _prepare(params: PrepareParams, out_dir: Path, spec: ImageSpec, pixels: PixelFile) -> dict:
    where = describe_source(params)
    kept = collect(
        load_source(params),
        spec,
        pixels,
        max_images=params.max_images,
        on_bad_image=params.on_bad_image,
        where=where,
        workers=params.workers or available_cpus(),
    )
    splits, stratified = plan_splits(
        kept.labels, pixels.count, params.test_fraction, params.seed, params.npz_max_images
    )
    manifest = kept.manifest(splits)
    written = write_splits(out_dir, pixels, splits, kept.labels, kept.class_names, params.shard_size, PREVIEW_IMAGES)
    summary = _summary(params, kept, splits, stratified, written)

    # Summary last: a summary.json on disk means the data files beside it are complete.
    with files.atomic_path(out_dir / "manifest.csv") as tmp:
        manifest.to_csv(tmp, index=False)  # written in chunks of rows, not built as one string first
    files.save_grid(out_dir / "preview.png", written.preview)
    files.write_json(out_dir / "summary.json", summary)
    _report(summary, where, out_dir)
    return summary


def _summary(params: PrepareParams, kept: Collected, splits: list[Split], stratified: bool, written: Written) -> dict:
    counts = {split.name: int(len(split.idx)) for split in splits}
    return {
        "source": params.source,
        "path": params.path if params.source in ("folder", "idx", "npz") else None,
        "dataset": params.dataset if params.source == "keras" else None,
        "image_size": params.image_size,
        "channels": params.channels,
        "fit": params.fit,
        "resize_method": RESIZE_METHOD[params.fit],
        "alpha_background": "black",
        "seed": params.seed,
        "test_fraction": params.test_fraction,
        "stratified": stratified,
        "max_images": params.max_images,
        "inputs": kept.inputs,
        "counts": {**counts, "total": sum(counts.values())},
        "npz_counts": {split.name: int(len(split.npz_rows)) for split in splits},
        "shards": {
            "shard_size": params.shard_size,
            "files": len(written.shards),
            "images": int(sum(s.count for s in written.shards)),
        },
        "class_names": kept.class_names,
        "class_counts": (
            {split.name: kept.class_counts(split.idx) for split in splits} if kept.labels is not None else None
        ),
        "skipped": kept.skipped,
        "duplicates": kept.duplicates,
        "data_hash": written.data_hash,
    }


def _report(summary: dict, where: str, out_dir: Path) -> None:
    counts = summary["counts"]
    size = f"{summary['image_size']}x{summary['image_size']}x{summary['channels']}"
    classes = f", {len(summary['class_names'])} classes" if summary["class_names"] else ", unlabelled"
    shard_files = summary["shards"]["files"]
    print(
        f"prepare: {where} -> {out_dir}: {counts['train']} train + {counts['test']} test images ({size}"
        f"{classes}{', stratified' if summary['stratified'] else ''}); "
        f"{summary['duplicates']} duplicate(s) dropped, {len(summary['skipped'])} input(s) skipped"
        + (f"; train split in {shard_files} shard(s)" if shard_files else "")
    )
    npz = summary["npz_counts"]
    if (npz["train"], npz["test"]) != (counts["train"], counts["test"]):
        print(f"  train.npz / test.npz hold a sample of {npz['train']} / {npz['test']} images (prepare.npz_max_images)")
    for entry in summary["skipped"][:10]:
        print(f"  skipped {entry['path']}: {entry['reason']}")
    if len(summary["skipped"]) > 10:
        print(f"  ... and {len(summary['skipped']) - 10} more (see summary.json)")
