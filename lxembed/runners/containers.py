"""Run a built container in the foreground: LXC (lxc-start -F), an OCI runtime (crun, runc) or a
running libvirtd's LXC driver (a transient domain).

Ctrl-C stops the container the way its init expects: `lxc-stop --rcfile` (so LXC sends the
config's halt signal), the bundle's stop signal through `crun kill`, or the domain's stop signal
through virsh. A second Ctrl-C kills.
Runners never change what they run: they read the config and the rootfs as written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import termios
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import List, Optional, Sequence

from ..containers.libvirt import METADATA_NS, SHUTDOWN_SIGNAL
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


LIBVIRT_URI = "lxc:///"


def virsh(*args: str) -> subprocess.CompletedProcess:
    argv = [need("virsh", "libvirt-clients"), "-q", "-c", LIBVIRT_URI, *args]
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def _follow_console(pty: str) -> threading.Thread:
    """Copy the domain's console (the host side of its pty) to our stdout until it closes."""

    def run() -> None:
        try:
            fd = os.open(pty, os.O_RDONLY | os.O_NOCTTY)
        except OSError:
            return
        try:
            attrs = termios.tcgetattr(fd)
            attrs[3] &= ~(termios.ECHO | termios.ICANON)  # no echo back into the container
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
            while True:
                data = os.read(fd, 4096)
                if not data:
                    break
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
        except OSError:
            pass  # EIO: the container's side closed
        finally:
            os.close(fd)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def run_libvirt(domain_xml: Path) -> int:
    """`virsh create` (a transient domain: nothing stays defined), its console followed, until
    the domain ends; Ctrl-C sends the stop signal its init expects (lxembed's <metadata>)."""
    doc = ET.parse(domain_xml).getroot()
    name = doc.findtext("name")
    meta = doc.find(f"metadata/{{{METADATA_NS}}}container")
    stop = meta.get("stop-signal") if meta is not None else SHUTDOWN_SIGNAL
    probe = virsh("version")
    if probe.returncode != 0:
        raise UserError(f"libvirt: cannot reach libvirtd's LXC driver at {LIBVIRT_URI}: "
                        f"{probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else ''}",
                        hint="start libvirtd (docs/containers.md, libvirt, says how without a "
                             "service manager)")
    created = virsh("create", str(domain_xml))
    if created.returncode != 0:
        raise UserError(f"{domain_xml}: virsh create failed: {created.stderr.strip()}")
    info(f"started {name}: virsh -c {LIBVIRT_URI} create {domain_xml}")
    info(f"a shell inside: virsh -c {LIBVIRT_URI} lxc-enter-namespace {name} --noseclabel "
         f"/bin/sh")
    console = ET.fromstring(virsh("dumpxml", name).stdout or "<domain/>").find(
        "devices/console[@type='pty']/source")
    follow = _follow_console(console.get("path")) if console is not None else None

    def send_stop() -> None:
        if stop == SHUTDOWN_SIGNAL:
            virsh("shutdown", name, "--mode", "signal")
        else:
            virsh("send-process-signal", name, "1", stop)

    def wait() -> int:
        while virsh("domstate", name).returncode == 0:  # a transient domain vanishes at its end
            time.sleep(0.1)
        return 0

    proc = _Waiter(wait)
    code = _wait_interruptible(proc, send_stop, lambda: virsh("destroy", name))
    if follow is not None:
        follow.join(1)
    return code


class _Waiter:
    """A function run in a thread, waited for like a Popen (for _wait_interruptible)."""

    def __init__(self, fn):
        self.result = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn) -> None:
        self.result = fn()

    def wait(self, timeout: Optional[float] = None) -> int:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise subprocess.TimeoutExpired("virsh domstate", timeout)
        return self.result
