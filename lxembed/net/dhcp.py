"""A bridge's DHCP server: dnsmasq, run the way LXC's lxc-net runs it (bound to the bridge only).

Its pid file and leases live in the description's state directory, so `down` stops exactly the
dnsmasq `up` started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import UserError
from .model import Bridge


def dnsmasq_args(bridge: Bridge, run: Path) -> List[str]:
    d = bridge.dhcp
    address = str(bridge.ipv4()[0].ip)
    args = ["dnsmasq", "--conf-file=/dev/null", "--strict-order", "--bind-interfaces",
            f"--interface={bridge.name}", "--except-interface=lo", f"--listen-address={address}",
            f"--dhcp-range={d.first},{d.last},{d.netmask},{d.lease_time}",
            "--dhcp-no-override", "--dhcp-authoritative",
            f"--dhcp-leasefile={run / (bridge.name + '.leases')}",
            f"--pid-file={pid_file(bridge.name, run)}", f"--port={53 if d.dns else 0}"]
    args += [f"--dhcp-host={mac},{ip}" for mac, ip in sorted(d.static.items())]
    return args


def pid_file(bridge: str, run: Path) -> Path:
    return run / f"{bridge}.pid"


def running_pid(pidfile: Path) -> Optional[int]:
    """The pid in `pidfile` if that process is a dnsmasq started with this pid file."""
    try:
        pid = int(Path(pidfile).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if f"--pid-file={pidfile}".encode() in cmdline else None


def running_args(pidfile: Path) -> Optional[List[str]]:
    pid = running_pid(pidfile)
    if pid is None:
        return None
    raw = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    return [os.path.basename(raw[0].decode())] + [a.decode() for a in raw[1:]]


def start(bridge: Bridge, run: Path) -> int:
    if not shutil.which("dnsmasq"):
        raise UserError("dnsmasq is not installed (DHCP on bridge "
                        f"{bridge.name})", hint="apt-get install dnsmasq-base")
    args = dnsmasq_args(bridge, run)
    pidfile = pid_file(bridge.name, run)
    (run / f"{bridge.name}.leases").touch()
    # A file, not a pipe, for stderr: the daemon keeps inherited descriptors a while.
    errors = run / f"{bridge.name}.err"
    with open(errors, "w+") as err:
        result = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err)
        err.seek(0)
        message = err.read().strip()
    errors.unlink()
    if result.returncode != 0:
        raise UserError(f"dnsmasq on {bridge.name}: {message}")
    pid = running_pid(pidfile)
    if pid is None:
        raise UserError(f"dnsmasq on {bridge.name} did not stay up")
    return pid


def find(pidfile: Path) -> List[int]:
    """Every running dnsmasq started with this pid file, found by its command line.

    The pid file alone is not enough after a crash: an `up` killed while dnsmasq started may
    leave a dnsmasq whose file is missing, and a pid in a stale file may by now belong to
    another process (which must never be signalled)."""
    want = f"--pid-file={pidfile}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # exited meanwhile
        if os.path.basename(argv[0]) == b"dnsmasq" and want in argv:
            pids.append(int(entry))
    return pids


def stop(pidfile: Path) -> None:
    """Stop the dnsmasq(s) of this pid file; a pid now used by another process is left alone."""
    pids = find(Path(pidfile))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + 5
    while time.monotonic() < end and any(_alive(pid) for pid in pids):
        time.sleep(0.005)
    Path(pidfile).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """True until the process has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def leases(run: Path) -> Dict[str, List[Dict[str, str]]]:
    """bridge -> [{expires, mac, ip, hostname}] from dnsmasq's lease files."""
    out: Dict[str, List[Dict[str, str]]] = {}
    if not run.is_dir():
        return out
    for f in sorted(run.glob("*.leases")):
        rows = []
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4:
                rows.append({"expires": parts[0], "mac": parts[1], "ip": parts[2],
                             "hostname": parts[3]})
        out[f.stem] = rows
    return out
