"""Run a built container in the foreground: LXC (lxc-start -F) or an OCI runtime (crun, runc).

Ctrl-C stops the container the way its init expects: `lxc-stop --rcfile` (so LXC sends the
config's halt signal), or the bundle's stop signal through `crun kill`. A second Ctrl-C kills.
Runners never change what they run: they read the config and the rootfs as written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional, Sequence

from ..containers.oci import ANNOTATION_STOP
from ..errors import UserError
from ..log import info

STOP_TIMEOUT = 10.0  # seconds the init gets to halt before lxc-stop/crun kill it


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise UserError(f"{tool} is not installed", hint=f"apt-get install {package}")
    return path


def lxc_start_argv(
    name: str,
    lxcpath: Path,
    config: Path,
    console_log: Optional[Path] = None,
    daemon: bool = False,
    log: Optional[Path] = None,
) -> List[str]:
    argv = [
        need("lxc-start", "lxc"),
        "-d" if daemon else "-F",
        "-P",
        str(lxcpath),
        "-n",
        name,
        "-f",
        str(config),
    ]
    if console_log is not None:
        argv += ["-L", str(console_log)]
    if log is not None:
        argv += ["-o", str(log), "-l", "INFO"]
    return argv


def lxc_stop(
    name: str,
    lxcpath: Path,
    config: Path,
    timeout: float = STOP_TIMEOUT,
    kill: bool = False,
    wait: bool = True,
) -> subprocess.CompletedProcess:
    """Halt with the config's lxc.signal.halt: LXC reads it only when given --rcfile."""
    argv = [need("lxc-stop", "lxc"), "-P", str(lxcpath), "-n", name, "--rcfile", str(config)]
    if kill:
        argv.append("-k")
    elif wait:
        argv += ["-t", str(int(timeout))]
    else:
        argv.append("--nowait")
    return subprocess.run(argv, capture_output=True, text=True)


class _Follow(threading.Thread):
    """Copy what is appended to a file to our stdout, like `tail -f` (the console log)."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.done = path, threading.Event()

    def run(self) -> None:
        fh = None
        while True:
            if fh is None and self.path.exists():
                fh = open(self.path, "rb")
            data = fh.read() if fh else b""
            if data:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
            elif self.done.is_set():
                break
            else:
                time.sleep(0.05)
        if fh:
            fh.close()


def _wait_interruptible(proc: subprocess.Popen, stop, kill, timeout: float = STOP_TIMEOUT) -> int:
    """Wait for `proc`. Ctrl-C calls stop() (which must not block); a second Ctrl-C, or
    `timeout` seconds without an exit, calls kill()."""
    deadline = None
    while True:
        try:
            return proc.wait(None if deadline is None else 0.1)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                info(f"still running {timeout:.0f} s after the stop request: killing it")
                kill()
                deadline = float("inf")
        except KeyboardInterrupt:
            if deadline is None:
                info("stopping the container (Ctrl-C again to kill it)")
                stop()
                deadline = time.monotonic() + timeout
            else:
                info("killing the container")
                kill()


def remove_lock_dir(lxcpath: Path) -> None:
    """LXC leaves a lock directory named after the lxcpath under /run/lxc/lock."""
    top = Path("/run/lxc/lock")
    lock = top / str(lxcpath).lstrip("/")
    shutil.rmtree(lock, ignore_errors=True)
    for parent in lock.parents:
        if parent == top:
            break
        try:
            parent.rmdir()
        except OSError:
            break


def run_lxc(name: str, config: Path, lxcpath: Path) -> int:
    """lxc-start -F in its own session (so the terminal's SIGINT reaches only us), with the
    console logged to a file we follow: an attached console would put the terminal in raw mode
    and hand Ctrl-C to the container's console instead of stopping it."""
    lxcpath.mkdir(parents=True, exist_ok=True)
    console = lxcpath / f"{name}.console.log"
    console.unlink(missing_ok=True)
    argv = lxc_start_argv(
        name, lxcpath, config, console_log=console, log=lxcpath / f"{name}.lxc.log"
    )
    info(f"starting {name}: {' '.join(argv)}")
    info(f"a shell inside: lxc-attach -P {lxcpath} -n {name}")
    follow = _Follow(console)
    follow.start()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)

    def stop() -> None:
        result = lxc_stop(name, lxcpath, config, wait=False)
        if result.returncode != 0 and "not running" not in result.stderr:
            info(result.stderr.strip())

    try:
        code = _wait_interruptible(proc, stop, lambda: lxc_stop(name, lxcpath, config, kill=True))
    finally:
        follow.done.set()
        follow.join(2)
        remove_lock_dir(lxcpath)
    return code


def crun_argv(runtime: Sequence[str] = ("crun",)) -> List[str]:
    argv = list(runtime)
    if len(argv) == 1:
        argv[0] = need(argv[0], argv[0])
    return argv


def stop_signal(bundle: Path) -> str:
    doc = json.loads((bundle / "config.json").read_text())
    return doc.get("annotations", {}).get(ANNOTATION_STOP, "SIGTERM")


def run_oci(name: str, bundle: Path, runtime: Sequence[str] = ("crun",)) -> int:
    """`crun run` in the foreground; Ctrl-C sends the bundle's stop signal.

    `runtime` is the command to call, e.g. ("crun",), ("runc",), or a wrapper around it (the
    tests wrap crun to hide a hybrid cgroup hierarchy it refuses).
    """
    base = crun_argv(runtime)
    signame = stop_signal(bundle)
    argv = base + ["run", "--bundle", str(bundle), name]
    info(f"starting {name}: {' '.join(argv)}")
    info(f"a shell inside: {' '.join(base)} exec {name} /bin/sh")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)

    def send(sig: str) -> None:
        subprocess.run(
            base + ["kill", name, sig.replace("SIG", "", 1)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    return _wait_interruptible(proc, lambda: send(signame), lambda: send("SIGKILL"))
