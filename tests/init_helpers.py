"""Run lxinit.py as a child subreaper with a config in a temporary directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

LXINIT = Path(__file__).resolve().parent.parent / "lxembed" / "init" / "lxinit.py"

# A service that records (name, event, time, pid) lines; on SIGTERM it cleans up briefly and
# exits, or with mode "ignore" it ignores SIGTERM.
SERVICE = r"""
import os, signal, sys, time
name, record, mode = sys.argv[1:4]
def log(what):
    with open(record, "a") as f:
        f.write("%s %s %.6f %d\n" % (name, what, time.time(), os.getpid()))
def term(sig, frame):
    log("term")
    time.sleep(0.05)
    log("exit")
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "ignore" else term)
log("started")
while True:
    time.sleep(1)
"""


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Poll predicate until it returns something true; return that or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %gs waiting for %s" % (timeout, predicate))
        time.sleep(interval)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None when it is gone."""
    try:
        data = Path("/proc/%d/stat" % pid).read_bytes()
    except OSError:
        return None
    fields = data.rsplit(b")", 1)[1].split()
    return fields[0].decode(), int(fields[1])


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is pid."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st and st[1] == pid:
                found.append((int(name), st[0]))
    return found


def alive(pid: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"


class InitProcess:
    """lxinit.py running in subreaper mode, its console captured to a file (or given `stdout`)."""

    prefix: list[str] = []  # what runs the init: nothing here, unshare for NamespaceInit

    def __init__(self, tmp: Path, config, env=None, python=sys.executable, args=None,
                 stdout=None, script=None):
        self.tmp = tmp
        self.config_path = tmp / "init.json"
        if isinstance(config, dict):
            config = dict({"log_dir": str(tmp / "log"), "ready_file": str(tmp / "ready"),
                           "timeline": str(tmp / "timeline"),
                           "health_file": str(tmp / "health.json"),
                           "healthy_file": str(tmp / "healthy")}, **config)
            self.config_path.write_text(json.dumps(config))
        elif isinstance(config, str):
            self.config_path.write_text(config)
        self.console_path = tmp / "console.txt"
        base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        base_env.update(env or {})
        if args is None:
            args = ["--config", str(self.config_path)]
        with open(self.console_path, "wb") as console:
            self.proc = subprocess.Popen(
                self.prefix + [python, "-I", "-S", str(script or LXINIT)] + args,
                stdout=console if stdout is None else stdout,
                stderr=subprocess.STDOUT,
                stdin=self.stdin(),
                env=base_env,
                start_new_session=True,
            )
        self.pid = self.find_init()

    def stdin(self):
        return subprocess.DEVNULL

    def find_init(self) -> int:
        return self.proc.pid

    def console(self) -> str:
        return self.console_path.read_text(errors="replace")

    def wait_console(self, text: str, timeout: float = 10.0) -> str:
        wait_until(lambda: text in self.console() or self.proc.poll() is not None, timeout)
        out = self.console()
        assert text in out, "%r not on the console:\n%s" % (text, out)
        return out

    def send(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("init did not exit:\n" + self.console()) from None

    def cleanup(self) -> None:
        """Kill whatever is left: the init's descendants first, then the init."""
        if self.proc.poll() is None:
            todo, found = [self.proc.pid], []
            while todo:
                kids = [p for p, _ in children_of(todo.pop())]
                found += kids
                todo += kids
            for pid in found + [self.proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self.proc.wait(10)


class NamespaceInit(InitProcess):
    """lxinit.py as PID 1 of new pid, mount, network and UTS namespaces (`unshare -pf
    --mount-proc`, root only): what a container runtime gives it, without the runtime.

    `pid` is the init's pid on the host; proc.returncode is its exit status (unshare passes it
    on, or kills itself with the signal that ended the init: -N then).
    """

    prefix = ["unshare", "--pid", "--fork", "--mount-proc", "--net", "--uts", "--"]

    def __init__(self, tmp: Path, config, netns: str | None = None, **kwargs):
        if netns:  # an existing network namespace instead of a new, empty one
            self.prefix = ["ip", "netns", "exec", netns] + [a for a in self.prefix if a != "--net"]
        super().__init__(tmp, config, **kwargs)

    def stdin(self):
        # Not /dev/null: as PID 1 the init would take that for `lxc-start -d` and open the
        # host's /dev/console in its place.
        return subprocess.PIPE

    def find_init(self) -> int:
        kids = wait_until(lambda: children_of(self.proc.pid) or self.proc.poll() is not None)
        assert kids is not True, "unshare exited at once: %s" % self.console()
        return kids[0][0]

    def inside(self) -> list[int]:
        """Host pids of every process in the namespace but the init."""
        todo, found = [self.pid], []
        while todo:
            kids = [p for p, _ in children_of(todo.pop())]
            found += kids
            todo += kids
        return found


def can_unshare() -> bool:
    """Whether new pid namespaces can be made here (root, and unshare installed)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", "--net", "--uts", "true"]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def service(script: Path, name: str, record: Path, mode: str = "behave", **extra) -> dict:
    """A config entry running SERVICE (written to script) as service `name`."""
    if not script.exists():
        script.write_text(SERVICE)
    cmd = [sys.executable, "-I", "-S", str(script), name, str(record), mode]
    return dict({"name": name, "command": cmd}, **extra)


def records(path: Path) -> list[tuple[str, str, float, int]]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            name, what, when, pid = line.split()
            out.append((name, what, float(when), int(pid)))
    return out


def crun_argv() -> list[str] | None:
    """How to run crun here, or None when it is not installed. crun refuses a hybrid cgroup
    hierarchy: cgroup2 is then hidden in a private mount namespace (tests only)."""
    if not shutil.which("crun"):
        return None
    if os.path.ismount("/sys/fs/cgroup/unified"):
        return ["unshare", "-m", "--propagation", "private", "sh", "-c",
                'umount -l /sys/fs/cgroup/unified && exec crun "$@"', "crun"]
    return ["crun"]
