"""The Python init as PID 1 of a real LXC container: ready, a fast clean stop, reboot vs halt.

The container is self-contained: a rootfs of a few directories and merged-/usr symlinks, the
host's /usr bound read-only, and the host's python3 running lxinit.py straight from the tree
(`python3 -I -S`), so the test checks the init itself, not an image build. LXC tells a halt from
a reboot by how PID 1 of the namespace ended: reboot(2) kills it with SIGINT (halt) or SIGHUP
(reboot), and on a reboot the monitor starts the container again ("Container requested reboot").
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import run_lxembed
from init_helpers import LXINIT, children_of, wait_until

from lxembed.runners.containers import lxc_start_argv, lxc_stop, remove_lock_dir

pytestmark = [pytest.mark.slow, pytest.mark.lxc]

NAME = "lxinit-test"
PYTHON = "/usr/bin/python3"
INIT_CMD = f"{PYTHON} -I -S /.lxembed/lxinit.py --config /.lxembed/init.json"
SERVICES = 10
# A service that cleans up on SIGTERM and says so: exit status 0 means it was not SIGKILLed.
SERVICE = 'trap "echo bye; exit 0" TERM; echo up; while :; do sleep 60 & wait; done'


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("lxc-start", "lxc-stop"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    if not os.path.exists(PYTHON):
        return f"no {PYTHON} on the host"
    return None


_SKIP = _skip_reason()
if _SKIP:
    pytestmark.append(pytest.mark.skip(reason=_SKIP))


class Container:
    """One LXC container in a private lxcpath (nothing under /var/lib/lxc)."""

    def __init__(self, base: Path, extra_services: list | None = None):
        self.base = base
        self.extra_services = extra_services or []
        self.rootfs = base / "rootfs"
        self.config = base / "config"
        self.console = base / "console.log"
        self.log = base / "lxc.log"
        self.monitor: subprocess.Popen | None = None
        self._write()

    def _write(self) -> None:
        root = self.rootfs
        for d in ("usr", "proc", "sys", "dev", "run", "tmp", "etc", ".lxembed"):
            (root / d).mkdir(parents=True)
        for link in ("bin", "sbin", "lib", "lib64"):  # merged /usr: the host's /usr does it all
            (root / link).symlink_to("usr/" + link)
        shutil.copy(LXINIT, root / ".lxembed/lxinit.py")
        services = [
            {
                "name": "s%d" % i,
                "command": ["/bin/sh", "-c", SERVICE],
                "after": ["s%d" % (i - 1)] if i else [],
            }
            for i in range(SERVICES)
        ] + self.extra_services
        config = {"hostname": NAME, "services": services, "shutdown_grace": 5.0}
        (root / ".lxembed/init.json").write_text(json.dumps(config))
        self.config.write_text(
            "\n".join(
                [
                    f"lxc.uts.name = {NAME}",
                    f"lxc.rootfs.path = dir:{root}",
                    "lxc.rootfs.managed = 0",
                    "lxc.mount.entry = /usr usr none ro,bind 0 0",
                    "lxc.mount.auto = proc:mixed sys:ro",
                    "lxc.autodev = 1",
                    "lxc.net.0.type = empty",
                    f"lxc.init.cmd = {INIT_CMD}",
                    "lxc.environment = PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                    f"lxc.console.logfile = {self.console}",
                    f"lxc.log.file = {self.log}",
                    "lxc.log.level = DEBUG",  # "is halting" / "is rebooting" are DEBUG lines
                    "",
                ]
            )
        )

    def lxc(self, tool: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            [tool, "-P", str(self.base), "-n", NAME, "--rcfile", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, foreground: bool) -> None:
        cmd = ["lxc-start", "-P", str(self.base), "-n", NAME, "-f", str(self.config)]
        if foreground:  # lxc-start stays the monitor: it restarts on reboot, exits on halt
            self.monitor = subprocess.Popen(
                cmd + ["-F"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        else:
            subprocess.run(cmd + ["-d"], check=True, timeout=30)

    def monitor_pid(self) -> int | None:
        """The LXC monitor: lxc-start itself with -F, else the daemon it forked."""
        if self.monitor is not None:
            return self.monitor.pid if self.monitor.poll() is None else None
        title = f"[lxc monitor] {self.base} {NAME}".encode()
        for name in os.listdir("/proc"):
            try:
                if name.isdigit() and Path(f"/proc/{name}/cmdline").read_bytes().startswith(title):
                    return int(name)
            except OSError:
                continue
        return None

    def init_pid(self) -> int | None:
        """The container's PID 1, as a host pid: the monitor's child running the init.

        Found through /proc, not lxc-info: while the monitor restarts a rebooted container,
        lxc-info can block on its command socket for 30 s.
        """
        monitor = self.monitor_pid()
        for pid, state in children_of(monitor) if monitor else ():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if state != "Z" and b"lxinit.py" in cmdline:
                return pid
        return None

    def ready(self, pid: int) -> bool:
        # /run is the init's own tmpfs: look at it through the init's root.
        return os.path.exists(f"/proc/{pid}/root/run/lxembed/ready")

    def wait_ready(self, not_pid: int | None = None) -> int:
        """PID 1 once ready and every service has said "up" (its SIGTERM trap is set)."""
        boots = self.console_text().count("lxembed-init: ready")

        def ready_pid():
            pid = self.init_pid()
            return pid if pid and pid != not_pid and self.ready(pid) else None

        pid = wait_until(ready_pid, timeout=30)
        wait_until(lambda: self.console_text().count("] up") >= (boots + 1) * SERVICES)
        return pid

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def destroy(self) -> None:
        if self.monitor_pid():
            self.lxc("lxc-stop", "-k", timeout=30)
        if self.monitor is not None:
            try:
                self.monitor.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.monitor.kill()
                self.monitor.wait()
        remove_lock_dir(self.base)


@pytest.fixture
def container(tmp_path):
    # Short path: LXC's command socket name is derived from it.
    base = Path(tmp_path)
    c = Container(base)
    try:
        yield c
    finally:
        c.destroy()
        print(c.console_text())


def _stopped_cleanly(console: str, action: str) -> list[str]:
    """The console lines of one shutdown, after checking every service exited on its own."""
    start = console.rindex(f"lxembed-init: {action}: stopping services")
    lines = console[start:].splitlines()
    stopped = [line for line in lines if ": stopped (" in line]
    assert [line.split(":")[1].strip() for line in stopped] == [
        "s%d" % i for i in reversed(range(SERVICES))
    ], lines
    assert all(line.endswith("(exit status 0)") for line in stopped), lines
    assert not [line for line in lines if "SIGKILL" in line], lines
    return lines


def test_lxc_stop_halts_in_under_a_second(container):
    container.start(foreground=False)
    pid = container.wait_ready()
    # `lxc-start -d` gives the init /dev/null: it must find the console itself.
    assert "lxembed-init: ready" in container.console_text()
    assert "mode container, lxc signal table" in container.console_text()

    t0 = time.monotonic()
    result = container.lxc("lxc-stop")  # SIGPWR, then waits until the container is STOPPED
    elapsed = time.monotonic() - t0
    print(f"lxc-stop with {SERVICES} services: {elapsed * 1000:.0f} ms")
    assert result.returncode == 0, result.stderr
    assert elapsed < 1.0, f"lxc-stop took {elapsed:.3f} s"
    wait_until(lambda: container.monitor_pid() is None and not os.path.exists(f"/proc/{pid}"))

    console = container.console_text()
    assert "SIGPWR: halt" in console
    lines = _stopped_cleanly(console, "halt")
    assert "[s0] bye" in console and "[s9] bye" in console, lines
    log = container.log_text()
    assert f"Child <{pid}> ended on signal Interrupt(2)" in log, log[-2000:]
    assert "is halting" in log and "is rebooting" not in log


def test_reboot_restarts_and_halt_ends(container):
    container.start(foreground=True)
    first = container.wait_ready()

    result = container.lxc("lxc-stop", "-r")  # lxc.signal.reboot: SIGINT
    assert result.returncode == 0, result.stderr
    second = container.wait_ready(not_pid=first)  # the monitor started the container again
    assert container.monitor.poll() is None, "lxc-start -F must survive a reboot"
    log = container.log_text()
    assert f"Child <{first}> ended on signal Hangup(1)" in log, log[-2000:]
    assert "Container requested reboot" in log
    console = container.console_text()
    assert "SIGINT: reboot" in console
    _stopped_cleanly(console[: console.rindex("mode container")], "reboot")
    assert console.count("lxembed-init: ready") == 2, console

    # Ctrl-alt-del style: SIGINT straight to PID 1 is a reboot too.
    os.kill(second, signal.SIGINT)
    third = container.wait_ready(not_pid=second)
    assert f"Child <{second}> ended on signal Hangup(1)" in container.log_text()

    t0 = time.monotonic()
    result = container.lxc("lxc-stop")
    elapsed = time.monotonic() - t0
    print(f"lxc-stop after two reboots: {elapsed * 1000:.0f} ms")
    assert result.returncode == 0, result.stderr
    assert container.monitor.wait(timeout=10) == 0, container.monitor.stderr.read()
    log = container.log_text()
    assert f"Child <{third}> ended on signal Interrupt(2)" in log, log[-2000:]
    _stopped_cleanly(container.console_text(), "halt")
    assert elapsed < 1.0, f"lxc-stop took {elapsed:.3f} s"


def test_container_bind_recipe(tmp_path):
    """The project's own bind-host container (recipes/container-bind.toml, its LXC config writer
    and the lxembed runner's start/stop commands) with this init as PID 1."""
    if os.uname().machine != "x86_64":
        pytest.skip("the container-bind build below names an x86_64 board")
    out = tmp_path / "out"
    run_lxembed("build", "-b", "qemu-x86_64", "-r", "container-bind", "-o", str(out), "-f", "lxc",
                check=True)  # fmt: skip
    config, rootfs = out / "lxc/config", out / "lxc/rootfs"
    assert "lxc.init.cmd = /usr/bin/python3 -I -S /.lxembed/" in config.read_text()
    lxcpath, console = tmp_path / "run", tmp_path / "console.log"
    lxcpath.mkdir()
    name = "container-bind"
    start = lxc_start_argv(name, lxcpath, config, console_log=console, daemon=True)

    def text() -> str:
        return console.read_text(errors="replace") if console.exists() else ""

    try:
        subprocess.run(start, check=True, timeout=30)
        wait_until(lambda: "lxembed-init: ready" in text(), timeout=30)
        assert "[hello] hello from container-bind" in text()
        t0 = time.monotonic()
        result = lxc_stop(name, lxcpath, config)
        elapsed = time.monotonic() - t0
        print(f"lxc-stop of container-bind: {elapsed * 1000:.0f} ms")
        assert result.returncode == 0, result.stderr
        assert "SIGPWR: halt" in text() and "lxembed-init: halt\n" in text(), text()
        assert elapsed < 1.0, f"lxc-stop took {elapsed:.3f} s"
        assert not (rootfs / "run/lxembed/ready").exists()  # /run is the container's tmpfs
    finally:
        lxc_stop(name, lxcpath, config, kill=True)
        remove_lock_dir(lxcpath)
        print(text())


def test_main_service_exit_ends_the_container_with_its_status(tmp_path):
    app = {"name": "app", "main": True, "after": ["s%d" % (SERVICES - 1)],
           "command": ["/bin/sh", "-c", "echo app up; sleep 0.5; exit 5"]}
    c = Container(Path(tmp_path), extra_services=[app])
    try:
        c.start(foreground=True)
        # The container ends for good (no reboot(2), so no restart). lxc-start -F exits 0 even
        # so: LXC 5.0.2 only logs "Container init process N exited", the status is not passed on.
        c.monitor.wait(timeout=30)
        console = c.console_text()
        assert console.count("lxembed-init: ready") == 1
        assert "lxembed-init: app: exit status 5: the main service ended" in console
        lines = _stopped_cleanly(console, "the main service ended")
        assert "lxembed-init: container stopped, exit status 5" in lines  # no reboot(2)
    finally:
        c.destroy()
