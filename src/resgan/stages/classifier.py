"""The ``classifier`` stage: train the learned feature extractor on the prepared train split, prove it on test.

The domain classifier where the data has labels and it learns them, else a self-supervised encoder
(:mod:`resgan.metrics.learned`). Its ``features`` layer is the offline feature extractor for FID, KID and
precision/recall; a classifier's softmax gives the classifier score (IS) too.
"""

from __future__ import annotations

from pathlib import Path

from resgan.config import ClassifierParams
from resgan.data.prepared import load_class_names, load_split
from resgan.files import atomic_path, write_json
from resgan.metrics.learned import RECORD_SUFFIX, fit_extractor

PARAMS = ("classifier",)  # the params this stage reads (its section): dvc.yaml gives it the same


def run(params: ClassifierParams, data_dir: Path, model_path: Path, metrics_path: Path) -> dict:
    """Train and prove the extractor; write the model to ``model_path`` (``.keras``), its record (kind,
    fitness, trusted) beside it (``.json``) and the numeric figures to ``metrics_path``, all atomically;
    return the figures. Raises ResganError when the prepared data is missing, or labels are needed
    (``classifier.kind: classifier``) and absent."""
    model, record, figures = fit_extractor(
        params, load_split(data_dir, "train"), load_split(data_dir, "test"), load_class_names(data_dir)
    )
    model_path = Path(model_path)
    with atomic_path(model_path, suffix=".keras") as tmp:
        model.save(tmp)
    write_json(model_path.with_suffix(RECORD_SUFFIX), record)
    write_json(metrics_path, figures)
    return figures
