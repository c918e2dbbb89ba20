"""Run one stage function in a fresh process and report its peak memory.

    python -m benchmarks.child train    --params P --data D --out O [--classifier C] [--images N --minutes M]
    python -m benchmarks.child evaluate --params P --data D --samples S --classifier C --out O

The last line printed is ``BENCH_RESULT {json}`` with ``max_rss_mib`` (this process's peak resident
set, see :func:`peak_rss_mib`), ``stage_s`` (the stage function's wall time, imports included) and the
stage's own result. MLflow goes wherever ``MLFLOW_TRACKING_URI`` points (the caller sets a
temporary store); evaluate logs nothing and registers nothing.

``train --images N --minutes M``: the run's two budgets (see :class:`Marks`): the EMA generator of the
step that reaches N training images goes to ``O/at_images.keras``, that of the first step past M
minutes to ``O/at_minutes.keras``, and training stops once both are written (``train.max_minutes``
should not stop it first; where ``train.steps`` does, the budget not reached gets the last step's
generator, marked ``ended``); the result gains ``marks``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resgan.gan.loop import Callback

RESULT_PREFIX = "BENCH_RESULT "


class Marks(Callback):
    """Snapshots of one run at two budgets: the step whose images seen (``step * batch_size``) first
    reach ``images``, and the first step after ``minutes`` of wall time (``clock``, from the start of
    training, as ``train.max_minutes`` counts). At each, ``export(path)`` writes the EMA generator to
    ``folder/at_images.keras`` or ``folder/at_minutes.keras`` and :attr:`marks` records the step, the
    images and the wall seconds; training stops once both are taken. A run whose ``train.steps`` ends
    it first (a learning-rate schedule that ends at the image budget) takes the missing mark at its
    last step, recorded with ``"ended": True``: what that budget gets is the finished run."""

    def __init__(
        self,
        batch_size: int,
        images: int,
        minutes: float,
        folder: Path,
        export: Callable[[Path], Any],
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.batch_size, self.images, self.minutes, self.folder, self.export = (
            batch_size,
            images,
            minutes,
            folder,
            export,
        )
        self.clock, self.start = clock, 0.0
        self.marks: dict[str, dict[str, Any]] = {}

    def on_train_begin(self, step: int, steps: int) -> None:
        super().on_train_begin(step, steps)
        self.start = self.clock()

    def on_step_end(self, step: int, figures: dict[str, float]) -> None:
        wall = self.clock() - self.start
        reached = {"at_images": step * self.batch_size >= self.images, "at_minutes": wall >= 60 * self.minutes}
        last = step >= self.steps
        for name in reached:
            if (reached[name] or last) and name not in self.marks:
                self.export(self.folder / f"{name}.keras")
                self.marks[name] = {
                    "step": step,
                    "images": step * self.batch_size,
                    "wall_s": round(wall, 1),
                    **({} if reached[name] else {"ended": True}),
                }
        self.stop_training = len(self.marks) == 2


def peak_rss_mib() -> float:
    """This process's peak resident set in MiB: VmHWM, the high-water mark of its own address space.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries that across fork and exec, so a child
    started by a 2 GB parent reports at least 2 GB.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.child")
    parser.add_argument("stage", choices=["train", "evaluate"])
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples", type=Path)
    parser.add_argument("--classifier", type=Path)
    parser.add_argument("--images", type=int, help="train: snapshot at this many training images (with --minutes)")
    parser.add_argument("--minutes", type=float, help="train: snapshot at this wall time (with --images)")
    args = parser.parse_args(argv)

    from resgan.config import load_params

    params = load_params(args.params)
    start = time.perf_counter()
    if args.stage == "train":
        from resgan.stages.train import TrainPaths, run

        marks: list[Marks] = []

        def snapshots(gan) -> list[Callback]:
            from resgan.gan.trainer import export_generator

            if args.images is None or args.minutes is None:
                return []
            marks.append(
                Marks(
                    params.train.batch_size,
                    args.images,
                    args.minutes,
                    args.out,
                    lambda path: export_generator(gan, path),
                )
            )
            return [marks[-1]]

        paths = TrainPaths(
            args.params,
            args.data,
            args.out / "models",
            args.out / "checkpoints",
            args.out / "metrics" / "train.json",
            args.out / "plots" / "train.csv",
            classifier=args.classifier,
        )
        result = run(params, paths, more_callbacks=snapshots)
        if marks:
            result["marks"] = marks[0].marks
    else:
        from resgan.stages.evaluate import run

        result = run(
            params,
            args.samples,
            args.data,
            args.classifier,
            None,
            args.out / "eval.json",
            args.out / "plots",
            registration_path=None,
        )
        result = {
            k: v
            for k, v in result.items()
            if k.startswith("time_") or k in ("n_generated", "n_real_reference", "n_real_test", "features")
        }
    stage_s = time.perf_counter() - start
    print(
        RESULT_PREFIX + json.dumps({"max_rss_mib": peak_rss_mib(), "stage_s": stage_s, "result": result}, default=str),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
