"""Run one stage function in a fresh process and report its peak memory.

    python -m benchmarks.child train    --params P --data D --out O
    python -m benchmarks.child evaluate --params P --data D --samples S --classifier C --out O

The last line printed is ``BENCH_RESULT {json}`` with ``max_rss_mib`` (this process's peak resident
set, see :func:`peak_rss_mib`), ``stage_s`` (the stage function's wall time, imports included) and the
stage's own result. MLflow goes wherever ``MLFLOW_TRACKING_URI`` points (the caller sets a
temporary store); evaluate logs nothing and registers nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

RESULT_PREFIX = "BENCH_RESULT "


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
    args = parser.parse_args(argv)

    from resgan.config import load_params

    params = load_params(args.params)
    start = time.perf_counter()
    if args.stage == "train":
        from resgan.stages.train import run

        result = run(params, args.params, args.data, args.out / "models", args.out / "checkpoints",
                     args.out / "metrics" / "train.json", args.out / "plots" / "train.csv")
    else:
        from resgan.stages.evaluate import run

        result = run(params, args.samples, args.data, args.classifier, None, args.out / "eval.json",
                     args.out / "plots", registration_path=None)
        result = {k: v for k, v in result.items() if k.startswith("time_") or k in ("n_generated", "n_real_reference",
                                                                                       "n_real_test", "features")}
    stage_s = time.perf_counter() - start
    print(RESULT_PREFIX + json.dumps({"max_rss_mib": peak_rss_mib(), "stage_s": stage_s, "result": result},
                                     default=str), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
