"""Console output: warnings, steps and progress bars (rich), all on stderr."""

from __future__ import annotations

import contextlib
import functools
import sys
import time

_quiet = False


@functools.lru_cache(maxsize=None)
def _console():
    # rich is imported on first use: ~40 ms that a quiet or --json run never pays.
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def warn(message: str) -> None:
    if _quiet:
        print(f"warning: {message}", file=sys.stderr)
    else:
        _console().print(f"[yellow]warning:[/] {message}", markup=True)


def info(message: str) -> None:
    if not _quiet:
        _console().print(message, markup=False)


@contextlib.contextmanager
def step(title: str):
    """Time one pipeline step and say how long it took."""
    start = time.monotonic()
    yield
    if not _quiet:
        _console().print(f"[dim]{title}: {time.monotonic() - start:.2f} s[/]", markup=True)


@contextlib.contextmanager
def progress(title: str, total: int):
    """A progress bar; yields a function to advance it by n."""
    if _quiet or not sys.stderr.isatty():
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), TimeElapsedColumn(), console=_console(), transient=True) as bar:
        task = bar.add_task(title, total=total)
        yield lambda n=1: bar.advance(task, n)
