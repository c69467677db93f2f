"""Console output: warnings, steps and progress bars (rich), all on stderr."""

from __future__ import annotations

import contextlib
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True, highlight=False)
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {message}", markup=True) if not _quiet else print(
        f"warning: {message}", file=sys.stderr)


def info(message: str) -> None:
    if not _quiet:
        console.print(message, markup=False)


@contextlib.contextmanager
def step(title: str):
    """Time one pipeline step and say how long it took."""
    start = time.monotonic()
    yield
    if not _quiet:
        console.print(f"[dim]{title}: {time.monotonic() - start:.2f} s[/]", markup=True)


@contextlib.contextmanager
def progress(title: str, total: int):
    """A progress bar; yields a function to advance it by n."""
    if _quiet or not console.is_terminal:
        yield lambda n=1: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(title, total=total)
        yield lambda n=1: bar.advance(task, n)
