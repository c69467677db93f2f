"""One qemu-system boot of a built image the way the boot tests drive it: to the init's ready
marker (and, optionally, a line saying the guest has settled), a list of commands on the serial
console, then a command that ends it (`poweroff` through the init) and qemu's own exit."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import pytest

from lxembed.config import Plan
from lxembed.pipeline import ensure_image
from lxembed.runners import READY
from lxembed.runners.accel import choose_accel
from lxembed.runners.console import ConsoleClosed, ConsoleTimeout
from lxembed.runners.qemu_system import (
    BOOT_TIMEOUT,
    CHECK_TIMEOUT,
    QemuSetup,
    initramfs_with_modules,
    qemu_argv,
    running_guest,
)
from lxembed.sources.kernel import fetch_kernel


@dataclass
class GuestSession:
    before_ready: str = ""  # the console up to the ready marker
    boot_seconds: Optional[float] = None  # host wall time to the ready marker
    results: Dict[str, Tuple[Optional[int], str]] = field(default_factory=dict)
    shutdown: str = ""  # the console after the ending command
    poweroff_seconds: Optional[float] = None
    exit_status: Optional[int] = None  # qemu's, once the guest powered off
    error: str = ""


def boot_session(plan: Plan, out: Path, commands: Iterable[Tuple[str, str]],
                 settled: Optional[str] = None, end: str = "poweroff",
                 end_timeout: float = 5.0, log: Optional[Path] = None) -> GuestSession:
    """Build `plan` as a cpio into `out` (unless current), boot it, run `commands` (name,
    shell command) and `end`; timeouts are KVM-sized and scaled for TCG like the runner's."""
    setup = QemuSetup.for_board(plan.board)
    if shutil.which(setup.binary) is None:
        pytest.skip(f"{setup.binary} is not installed")
    kernel = fetch_kernel(plan.board)
    image = ensure_image(plan, out, "cpio", None, kernel)
    accel = choose_accel(plan.arch)
    session = GuestSession()
    with initramfs_with_modules(image) as initrd, open(log or out / "console.log", "wb") as f:
        start = time.monotonic()
        with running_guest(qemu_argv(setup, kernel, initrd, accel), f) as (proc, console):
            try:
                match = console.expect(re.compile(r"(?s)(.*?)" + READY.pattern),
                                       accel.timeout(BOOT_TIMEOUT))
                session.before_ready = match.group(1)
                session.boot_seconds = time.monotonic() - start
                if settled:  # later console lines would mix into the commands' output
                    console.expect(re.compile(re.escape(settled)), accel.timeout(BOOT_TIMEOUT))
                timeout = accel.timeout(CHECK_TIMEOUT)
                console.sync(timeout)
                for name, command in commands:
                    session.results[name] = console.run(command, timeout)
                t0 = time.monotonic()
                console.send(end + "\n")
                session.shutdown = console.drain(accel.timeout(end_timeout))
                session.exit_status = proc.wait(timeout=2.0)
                session.poweroff_seconds = time.monotonic() - t0
            except (ConsoleClosed, ConsoleTimeout, subprocess.TimeoutExpired) as e:
                session.error = f"{type(e).__name__}: {e}"
            finally:
                session.shutdown += console.buffer
    return session
