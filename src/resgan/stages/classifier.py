"""The ``classifier`` stage: train the domain classifier on the prepared train split, score it on test.

Its ``features`` layer is the offline feature extractor for FID, KID and precision/recall, and
its softmax the classifier score (IS), where no InceptionV3 weights are available.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from resgan.config import ClassifierParams
from resgan.errors import ResganError
from resgan.io import atomic_path, write_json


def _load_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    path = Path(data_dir) / f"{split}.npz"
    if not path.is_file():
        raise ResganError(f"{path} not found: run the prepare stage first (`dvc repro prepare`)")
    with np.load(path, allow_pickle=False) as data:
        images = data["images"]
        labels = data["labels"] if "labels" in data.files else None
        names = [str(n) for n in data["class_names"]] if "class_names" in data.files else None
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ResganError(f"{path}: images must be uint8 NHWC, got {images.dtype} {images.shape}")
    return images, labels, names


def run(params: ClassifierParams, data_dir: Path, model_path: Path, metrics_path: Path) -> dict:
    """Train the classifier on ``data_dir/train.npz``, evaluate it on ``test.npz``, save both outputs.

    Writes the model to ``model_path`` (``.keras``) and ``{accuracy, loss, epochs, n_train,
    n_test, num_classes, time_s}`` to ``metrics_path`` (JSON), both atomically, and returns
    that dict. Raises ResganError when the prepared data has no labels.
    """
    import keras

    from resgan.metrics.classifier import build_classifier

    train_images, train_labels, class_names = _load_split(data_dir, "train")
    test_images, test_labels, _ = _load_split(data_dir, "test")
    if train_labels is None or test_labels is None:
        raise ResganError("the domain classifier needs labelled data, and the prepared data has no labels "
                          "(for a folder source, put images in one sub-folder per class with "
                          "prepare.labels_from_folders: true); without labels, set evaluate.features to "
                          "inception and remove the classifier stage's output from evaluate's inputs")
    if len(train_images) == 0 or len(test_images) == 0:
        raise ResganError("the domain classifier needs images in both train.npz and test.npz")
    if test_images.shape[1:] != train_images.shape[1:]:
        raise ResganError(f"train and test images differ in shape: {train_images.shape[1:]} vs {test_images.shape[1:]}")
    train_labels, test_labels = train_labels.astype(np.int64), test_labels.astype(np.int64)
    # Images outside any class folder carry label -1: the classifier learns from the labelled ones.
    train_images, train_labels = train_images[train_labels >= 0], train_labels[train_labels >= 0]
    test_images, test_labels = test_images[test_labels >= 0], test_labels[test_labels >= 0]
    if len(train_images) == 0 or len(test_images) == 0:
        raise ResganError("the domain classifier needs labelled images in both splits")
    num_classes = len(class_names) if class_names else int(max(train_labels.max(), test_labels.max())) + 1
    if num_classes < 2:
        raise ResganError("the domain classifier needs at least 2 classes in the prepared data")
    for split, labels in (("train", train_labels), ("test", test_labels)):
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ResganError(f"{split}.npz: labels must lie in 0..{num_classes - 1}")

    keras.utils.set_random_seed(params.seed)
    model = build_classifier(train_images.shape[1:], num_classes, params.width, params.feature_dim)
    model.compile(optimizer=keras.optimizers.Adam(params.lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(train_images.astype(np.float32), train_labels, batch_size=params.batch_size,
              epochs=params.epochs, shuffle=True, verbose=2)
    loss, accuracy = model.evaluate(test_images.astype(np.float32), test_labels,
                                    batch_size=params.batch_size, verbose=0)
    result = {
        "accuracy": float(accuracy),
        "loss": float(loss),
        "epochs": params.epochs,
        "n_train": int(len(train_images)),
        "n_test": int(len(test_images)),
        "num_classes": num_classes,
        "time_s": round(time.perf_counter() - start, 2),
    }
    with atomic_path(model_path, suffix=".keras") as tmp:
        model.save(tmp)
    write_json(metrics_path, result)
    return result
