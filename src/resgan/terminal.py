"""What a command shows on the terminal: one progress bar, and TensorFlow's start-up lines kept off it.

Both write to stderr, so a command's stdout stays its result (``resgan generate`` prints one line)
and DVC logs, pipes and CI see no bar.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


@contextmanager
def progress_bar(total: int, description: str, show: bool | None = None) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``, which moves a bar of ``total`` items on by ``n``.

    The bar is drawn on stderr when ``show`` is true, or (``show`` None) when stderr is a terminal;
    otherwise ``advance`` does nothing. It disappears once the work is done.
    """
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        yield lambda n: None
        return
    with Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


@contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Keep TensorFlow's C++ start-up lines (oneDNN, CUDA stubs, cuInit) off the terminal.

    TensorFlow 2.21 writes them straight to file descriptor 2 through absl, some before it reads
    ``TF_CPP_MIN_LOG_LEVEL``; a command line tool should print its own output and errors only.
    Errors raised inside still reach the caller (and are printed after stderr is restored).
    ``TF_CPP_MIN_LOG_LEVEL=0`` (or 1) shows everything.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") in ("0", "1"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@functools.cache
def start_tensorflow() -> None:
    """Import TensorFlow and initialise its devices with their start-up lines kept off stderr.

    TensorFlow prints them at import (CUDA stubs) and when it first looks for devices (cuInit, oneDNN),
    both through absl before ``TF_CPP_MIN_LOG_LEVEL`` applies, so a stage under ``dvc repro`` would
    show a dozen lines that are not its own. Doing both here, once, leaves a stage's output its own.
    Idempotent and cheap after the first call.
    """
    with quiet_tensorflow():
        import tensorflow as tf

        tf.config.list_physical_devices()
        tf.constant(0.0) + 1.0  # the first op initialises the runtime (and logs once)
