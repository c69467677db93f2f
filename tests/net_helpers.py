"""A throwaway "host" for network tests: a fresh network and mount namespace (with its own
/run/netns), so `lxembed net up` and `ip netns add` never touch the machine's own network.

Everything created inside dies with the namespace; processes a test left in it (dnsmasq) are
killed by pid at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

ROOT = Path(__file__).resolve().parents[1]


def skip_reason() -> str:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("unshare", "nsenter", "ip", "nft", "dnsmasq"):
        if not shutil.which(tool):
            return f"{tool} is not installed (scripts/quickstart.sh installs it)"
    return ""


class HostNamespace:
    """`unshare -n -m` holding a private /run/netns and /sys; commands run in it through nsenter."""

    def __init__(self, state: Path):
        self.state = state
        self.holder = subprocess.Popen(
            ["unshare", "-n", "-m", "--propagation", "private", "sh", "-c",
             # its own /run/netns, and a sysfs of this namespace (LXC looks for a bridge in
             # /sys/class/net), with the cgroup mounts carried over for LXC
             "mkdir -p /run/netns && mount -t tmpfs lxembed-test /run/netns && "
             "mkdir /run/netns/.cg && mount --rbind /sys/fs/cgroup /run/netns/.cg && "
             "mount -t sysfs sysfs /sys && mount --move /run/netns/.cg /sys/fs/cgroup && "
             "rmdir /run/netns/.cg && echo ready && exec sleep 3600"],
            stdout=subprocess.PIPE, text=True)
        assert self.holder.stdout.readline().strip() == "ready"
        self.pid = self.holder.pid
        self.netns_inode = os.stat(f"/proc/{self.pid}/ns/net").st_ino
        self.env = dict(os.environ, LXEMBED_STATE=str(state), PYTHONPATH=str(ROOT))

    def run(self, *cmd: str, check: bool = True, timeout: float = 30,
            input: str = None) -> subprocess.CompletedProcess:
        result = subprocess.run(["nsenter", "-t", str(self.pid), "-n", "-m", "--", *cmd],
                                capture_output=True, text=True, env=self.env, timeout=timeout,
                                input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)}: exit {result.returncode}\n{result.stdout}"
                                 f"\n{result.stderr}")
        return result

    def popen(self, *cmd: str) -> subprocess.Popen:
        return subprocess.Popen(["nsenter", "-t", str(self.pid), "-n", "-m", "--", *cmd],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env, start_new_session=True)

    def lxembed(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "lxembed", *args, check=check)

    def ns(self, netns: str, *cmd: str, check: bool = True, timeout: float = 30):
        return self.run("ip", "netns", "exec", netns, *cmd, check=check, timeout=timeout)

    def ping(self, netns: str, address: str, *extra: str, wait: float = 1) -> bool:
        cmd = ["ping", "-c", "1", "-W", str(wait), *extra, address]
        result = self.ns(netns, *cmd, check=False) if netns else self.run(*cmd, check=False)
        return result.returncode == 0

    def snapshot(self) -> Dict[str, object]:
        """`ip -j -d link`, `ip -j addr` and `nft -j list ruleset`, timers left out."""
        def load(*cmd):
            return json.loads(self.run(*cmd).stdout or "[]")
        ruleset = load("nft", "-j", "list", "ruleset")
        ruleset = [x for x in ruleset.get("nftables", []) if "metainfo" not in x]
        return {"link": _no_timers(load("ip", "-j", "-d", "link")),
                "addr": load("ip", "-j", "addr"), "ruleset": ruleset,
                "netns": sorted(os.listdir(f"/proc/{self.pid}/root/run/netns"))}

    def settled(self, timeout: float = 10) -> Dict[str, object]:
        """A snapshot that stayed the same for 0.3 s (carrier, IPv6 DAD and STP settle)."""
        end = time.monotonic() + timeout
        last = self.snapshot()
        while time.monotonic() < end:
            time.sleep(0.3)
            now = self.snapshot()
            if now == last and not _tentative(now["addr"]):
                return now
            last = now
        return last

    def processes(self) -> List[int]:
        """pids whose network namespace is this host's (dnsmasq started by `up`)."""
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.pid:
                try:
                    if os.stat(f"/proc/{entry}/ns/net").st_ino == self.netns_inode:
                        pids.append(int(entry))
                except OSError:
                    pass
        return pids

    def close(self) -> None:
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.holder.kill()
        self.holder.wait()


def _tentative(addresses) -> bool:
    """IPv6 duplicate address detection still running (the flag clears after ~1 s)."""
    return any(a.get("tentative") for link in addresses for a in link.get("addr_info", []))


def _no_timers(value):
    if isinstance(value, dict):
        return {k: _no_timers(v) for k, v in value.items() if not k.endswith("_timer")}
    if isinstance(value, list):
        return [_no_timers(v) for v in value]
    return value


@contextlib.contextmanager
def host_namespace(tmp_path: Path) -> Iterator[HostNamespace]:
    """A HostNamespace for one test (skips without root or the tools), closed whatever happens."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    h = HostNamespace(tmp_path / "state")
    try:
        yield h
    finally:
        h.close()
