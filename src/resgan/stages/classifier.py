"""The ``classifier`` stage: train the domain classifier on the prepared train split, score it on test.

Its ``features`` layer is the offline feature extractor for FID, KID and precision/recall, and
its softmax the classifier score (IS), where no InceptionV3 weights are available.
"""

from __future__ import annotations

from pathlib import Path

from resgan.config import ClassifierParams
from resgan.data.prepared import load_class_names, load_split
from resgan.files import atomic_path, write_json
from resgan.metrics.classifier import labelled_data, train_classifier


def run(params: ClassifierParams, data_dir: Path, model_path: Path, metrics_path: Path) -> dict:
    """Train the classifier on ``data_dir/train.npz``, evaluate it on ``test.npz``, save both outputs.

    Writes the model to ``model_path`` (``.keras``) and ``{accuracy, loss, epochs, n_train,
    n_test, num_classes, time_s}`` to ``metrics_path`` (JSON), both atomically, and returns
    that dict. Raises ResganError when the prepared data is missing or has no labels.
    """
    train, test, num_classes = labelled_data(load_split(data_dir, "train"), load_split(data_dir, "test"),
                                             load_class_names(data_dir))
    model, result = train_classifier(params, train, test, num_classes)
    with atomic_path(model_path, suffix=".keras") as tmp:
        model.save(tmp)
    write_json(metrics_path, result)
    return result
