"""A `net up` killed (SIGKILL, as an OOM kill or a power cut would stop it) at any point: the
next `up` finishes the run and `down` removes exactly what exists, and two runs at once are
serialised by the description's lock. All in a throwaway host namespace (net_helpers), with
real pyroute2, nft and dnsmasq.

The kill points need no hook in lxembed: `up` appends one record to its journal before each
change it makes, so the test watches the journal file and kills the process once it holds N
records (N = 1 .. every record a run writes, then later, into the commit).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from net_helpers import host_namespace

DEMO = Path(__file__).resolve().parents[1] / "examples" / "net-demo.toml"
NAME = "net-demo"
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
# The demo (netns, bridge, ports with peers in namespaces, a veth, macvlans, nft, dnsmasq) and
# every other kind of change: a NIC bridged (master, up), a NIC handed to a namespace, NAT (the
# ip_forward sysctl).
EXTRA = """
[[phys]]
name = "uplink0"
bridge = "lxebr0"

[[phys]]
name = "nic1"
netns = "lxe-a"

[[nat]]
bridge = "lxebr0"
uplink = "wan0"
"""


@pytest.fixture
def host(tmp_path):
    with host_namespace(tmp_path) as h:
        # stand-ins for NICs: down, on no bridge, as the host had them before `up`
        h.run("ip", "link", "add", "uplink0", "type", "veth", "peer", "uplink1")
        h.run("ip", "link", "add", "nic1", "type", "veth", "peer", "nic2")
        yield h


@pytest.fixture
def desc(tmp_path) -> str:
    path = tmp_path / "crash.toml"
    path.write_text(DEMO.read_text() + EXTRA)
    return str(path)


def world(h) -> Dict[str, object]:
    """What a leftover would change: links (master, up), namespaces, nft tables, processes in
    the host namespace (dnsmasq), ip_forward, and lxembed's files."""
    links = json.loads(h.run("ip", "-j", "link").stdout)
    files = h.state / "net"
    return {"links": sorted((x["ifname"], x.get("master"), "UP" in x["flags"]) for x in links),
            "netns": sorted(os.listdir(f"/proc/{h.pid}/root/run/netns")),
            "tables": h.run("nft", "list", "tables").stdout,
            "processes": h.processes(),
            "ip_forward": h.run("cat", IP_FORWARD).stdout,
            "files": sorted(p.name for p in files.iterdir() if p.suffix != ".lock")
            if files.is_dir() else []}


# Several commands in one Python: each `lxembed` run spends ~0.2 s starting Python and
# importing pyroute2, and the 20-kill test runs three commands after each kill.
DRIVER = """
import contextlib, io, json, sys
from lxembed.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    out.append([code, stdout.getvalue(), stderr.getvalue()])
print(json.dumps(out))
"""


def commands(h, *argvs: List[str]) -> List[tuple]:
    """(exit status, stdout, stderr) of each `lxembed ARGV` (through the CLI's main)."""
    result = h.run(sys.executable, "-c", DRIVER, json.dumps(argvs), timeout=60)
    return [tuple(x) for x in json.loads(result.stdout)]


def in_force(code: int, out: str) -> bool:
    """`net check` finds nothing but what it finds after any `up` of this description: a NIC
    handed to a namespace arrives down there and `up` leaves it so (as before this journal)."""
    return code == 0 or [x.strip() for x in out.splitlines()[1:]] == ["nic1 (netns lxe-a): down"]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def journal(h) -> Path:
    return h.state / "net" / f"{NAME}.journal"


def records(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def up_process(h, desc: str) -> subprocess.Popen:
    """`lxembed net up` in the host namespace; nsenter execs it, so the pid is lxembed's."""
    return subprocess.Popen(["nsenter", "-t", str(h.pid), "-n", "-m", "--", sys.executable,
                             "-m", "lxembed", "net", "up", desc], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=h.env,
                            start_new_session=True)


def reap(proc: subprocess.Popen) -> None:
    """Wait for a killed run and close its pipes (nothing in them is needed)."""
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def stop_at(h, proc: subprocess.Popen, n: int, delay: float = 0.0,
            sig: int = signal.SIGKILL, group: bool = False) -> Optional[int]:
    """Send `sig` once the journal holds `n` records (and `delay` more seconds have passed);
    the records it held then, or None when the run ended first."""
    path, end = journal(h), time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < end:
        if records(path) >= n:
            if delay:
                time.sleep(delay)
            if proc.poll() is not None:
                return None
            (os.killpg if group else os.kill)(proc.pid, sig)
            return records(path)
        time.sleep(0.0002)
    return None


def wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 20) -> str:
    """The first stderr line of `proc` that holds `text` (fails after `timeout`)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stderr], [], [], end - time.monotonic())
        if not ready:
            break
        line = proc.stderr.readline()
        if text in line:
            return line
        assert line, f"{proc.args}: ended without saying {text!r}"
    raise AssertionError(f"no {text!r} from {proc.args} within {timeout} s")


def count_full_run(h, desc: str) -> int:
    """Records one whole `up` writes (the journal is removed at its end: watched meanwhile)."""
    proc, seen = up_process(h, desc), 0
    while proc.poll() is None:
        seen = max(seen, records(journal(h)))
        time.sleep(0.0002)
    assert proc.returncode == 0, proc.stderr.read()
    h.lxembed("net", "down", desc)
    return seen


def kill_points(total: int, want: int = 20) -> List[tuple]:
    """(records, extra delay): after each record a run writes, then into the commit."""
    points = [(n, 0.0) for n in range(1, total + 1)]
    late = [(total, 0.01 * (i + 1)) for i in range(max(0, want - total))]
    if len(points) > want - len(late):  # a longer run: spread `want` points over it
        keep = want - len(late)
        points = [points[round(i * (total - 1) / max(1, keep - 1))] for i in range(keep)]
    return points + late


@pytest.mark.slow
def test_up_killed_at_20_points_then_up_then_down_leaves_nothing(host, desc):
    before = world(host)
    total = count_full_run(host, desc)
    assert total >= 15, total  # header, 4 netns, 7 links, master, up, moved, tables, ...
    assert world(host) == before
    landed = []
    for i, (n, delay) in enumerate(kill_points(total)):
        proc = up_process(host, desc)
        landed.append(stop_at(host, proc, n, delay, group=i % 2 == 1))  # its children too
        reap(proc)
        info = f"kill point {i}: {n} records + {delay} s (landed at {landed[-1]})"
        up, check, down = commands(host, ["net", "up", desc], ["net", "check", desc],
                                   ["net", "down", desc])
        assert up[0] == 0, f"{info}\n{up}"
        assert in_force(*check[:2]), f"{info}\n{check}"
        assert down[0] == 0, f"{info}\n{down}"
        assert world(host) == before, info
    # the kills were spread through the run, not bunched at one end
    assert sum(x is not None for x in landed) >= 18, landed
    assert len({x for x in landed if x is not None}) >= total - 2, landed


@pytest.mark.slow
def test_down_after_a_kill_removes_exactly_what_exists(host, desc):
    before = world(host)
    for n in (2, 7, 10, 13, 16, 18):
        proc = up_process(host, desc)
        at = stop_at(host, proc, n)
        reap(proc)
        assert at is not None, f"the run ended before {n} records"
        show, check, down = commands(host, ["net", "show", desc], ["net", "check", desc],
                                     ["net", "down", desc])
        first = show[1].splitlines()[0]
        assert "an interrupted `net up`" in first and "net down" in first, first
        assert check[0] == 1 and "an interrupted `net up`" in check[1]
        assert down[0] == 0 and down[2] == "", down  # never made: skipped quietly
        assert world(host) == before, f"killed at {at} records: {down[1]}"


def test_down_skips_what_was_never_made_and_what_is_not_its_own(host, tmp_path, desc):
    """A journal as a run killed early would leave it, written by hand: a namespace and a link
    announced but never made, a foreign link that took an announced name (another MAC), a
    dnsmasq pid file whose pid now belongs to another process."""
    host.run("ip", "link", "add", "lxebr0", "address", "02:00:00:00:99:01", "type", "bridge")
    sleeper = host.popen("sleep", "60")
    run = host.state / "net" / NAME
    run.mkdir(parents=True)
    (run / "lxebr0.pid").write_text(f"{sleeper.pid}\n")
    entries = [{"run": "up", "pid": 1, "file": desc, "started": time.time()},
               {"kind": "netns", "name": "lxe-a"},
               {"kind": "link", "name": "lxebr0", "netns": None, "type": "bridge",
                "mac": "02:00:00:77:ff:01"},
               {"kind": "link", "name": "vh-a", "netns": None, "type": "veth",
                "mac": "02:00:00:77:01:0a"},
               {"kind": "dnsmasq", "name": "lxebr0", "pidfile": str(run / "lxebr0.pid")}]
    journal(host).write_text("".join(json.dumps(e) + "\n" for e in entries) + '{"kind": "li')
    try:
        before = world(host)
        shown = host.lxembed("net", "show", desc).stdout
        assert "announced 4 change(s), the last dnsmasq lxebr0" in shown
        out = host.lxembed("net", "down", desc)
        assert out.stderr == "" and "removed nothing" in out.stdout, out
        after = world(host)
        assert after["links"] == before["links"]  # the foreign lxebr0 stays
        assert sleeper.poll() is None  # the pid's new owner was not signalled
        assert after["files"] == []
    finally:
        sleeper.kill()
        reap(sleeper)


@pytest.mark.slow
def test_a_user_error_after_a_kill_is_one_line_and_removes_the_killed_runs_objects(host, desc):
    before = world(host)
    proc = up_process(host, desc)
    assert stop_at(host, proc, 3, sig=signal.SIGSTOP) is not None  # lxe-a made, lxe-b maybe
    os.kill(proc.pid, signal.SIGKILL)
    reap(proc)
    host.run("ip", "link", "add", "vh-c", "type", "bridge")  # in the way of port vh-c
    out = host.lxembed("net", "up", desc, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("lxembed: error: ") and "is a bridge, not a veth" in out.stderr
    assert "netns lxe-a" in out.stderr  # the killed run's, removed with this run's
    host.run("ip", "link", "del", "vh-c")
    assert world(host) == before


@pytest.mark.slow
def test_two_ups_at_once_wait_for_the_lock_and_both_succeed(host, desc):
    before = world(host)
    lock = host.state / "net" / f"{NAME}.lock"
    lock.parent.mkdir(parents=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242 up\n")
    procs = [up_process(host, desc), up_process(host, desc)]
    try:
        for p in procs:
            assert "waiting for `net up` (pid 4242) to finish" in wait_for_line(p, "waiting")
    finally:
        os.close(fd)  # both proceed, one after the other
    outs = [p.communicate(timeout=30) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    made = sorted("created nothing new" in out for out, _ in outs)
    assert made == [False, True], outs  # the second found everything in place
    assert in_force(*commands(host, ["net", "check", desc])[0][:2])
    assert len(host.processes()) == 1  # one dnsmasq
    host.lxembed("net", "down", desc)
    assert world(host) == before


@pytest.mark.slow
def test_a_waiting_up_takes_over_when_the_holder_is_killed(host, desc):
    before = world(host)
    first = up_process(host, desc)
    assert stop_at(host, first, 9, sig=signal.SIGSTOP) is not None  # holds the lock, stopped
    shown = host.lxembed("net", "show", desc).stdout.splitlines()[0]
    assert f"`net up` (pid {first.pid}) is running now" in shown
    second = up_process(host, desc)
    assert f"(pid {first.pid})" in wait_for_line(second, "waiting")
    os.kill(first.pid, signal.SIGKILL)  # the kernel drops its flock
    reap(first)
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert "took over from an interrupted run: netns lxe-a" in out
    assert in_force(*commands(host, ["net", "check", desc])[0][:2])
    host.lxembed("net", "down", desc)
    assert world(host) == before


@pytest.mark.slow
def test_down_killed_part_way_then_down_or_up_again(host, desc):
    """`down` keeps the state file until all is removed and removes only what exists, so a
    killed `down` is finished by the next `down`, or redone by an `up`. Kill points: once it
    holds the lock, once dnsmasq is gone, the rules, the host's links, a namespace."""
    netns = Path(f"/proc/{host.pid}/root/run/netns")
    links = Path(f"/proc/{host.pid}/root/sys/class/net")  # the host namespace's own sysfs
    lock = host.state / "net" / f"{NAME}.lock"
    triggers = {
        "locked": lambda pid: lock.read_text().startswith(f"{pid} down"),
        "dnsmasq stopped": lambda pid: not any(map(alive, dnsmasq)),
        "rules deleted": lambda pid: "lxembed" not in host.run("nft", "list", "tables").stdout,
        "links deleted": lambda pid: not (links / "lxebr0").exists(),
        "a netns removed": lambda pid: len(os.listdir(netns)) < 4,  # may land after the end
    }
    before, midway = world(host), []
    for i, (what, reached) in enumerate(triggers.items()):
        host.lxembed("net", "up", desc)
        dnsmasq = host.processes()
        proc = subprocess.Popen(["nsenter", "-t", str(host.pid), "-n", "-m", "--",
                                 sys.executable, "-m", "lxembed", "net", "down", desc],
                                env=host.env, stdout=subprocess.DEVNULL)
        end = time.monotonic() + 20
        while proc.poll() is None and not reached(proc.pid) and time.monotonic() < end:
            time.sleep(0.0005)
        proc.kill()
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, f"{what}: `down` ended before the kill"
        midway.append((host.state / "net" / f"{NAME}.json").exists())
        argvs = [["net", "down", desc]] if i % 2 == 0 else \
            [["net", "up", desc], ["net", "check", desc], ["net", "down", desc]]
        results = commands(host, *argvs)
        assert all(r[0] == 0 or argv[1] == "check" for r, argv in zip(results, argvs)), results
        if len(results) == 3:
            assert in_force(*results[1][:2]), (what, results[1])
        assert world(host) == before, what
    assert sum(midway) >= 4, dict(zip(triggers, midway))


def test_a_namespace_file_left_bare_by_a_cut_removal(host, tmp_path):
    """`down` (or `ip netns del`) killed between unmounting a namespace and unlinking its file
    leaves /run/netns/NAME as a bare file: `up` makes it again when it is the description's,
    refuses by name when not; `check` says it is missing instead of failing."""
    desc = tmp_path / "bare.toml"
    desc.write_text('name = "bare"\n[[bridge]]\nname = "bbr0"\naddresses = ["10.88.0.1/24"]\n'
                    '[[port]]\nname = "b-1"\nbridge = "bbr0"\nnetns = "b-1"\n'
                    'addresses = ["10.88.0.2/24"]\n')
    before = world(host)
    host.lxembed("net", "up", str(desc))
    host.run("umount", "/run/netns/b-1")  # the namespace dies, and the port with it
    check = host.lxembed("net", "check", str(desc), check=False)
    assert check.returncode == 1 and "netns b-1 is missing" in check.stdout, check
    out = host.lxembed("net", "up", str(desc))
    assert "created netns b-1, link b-1" in out.stdout
    assert host.ping("b-1", "10.88.0.1")
    host.lxembed("net", "down", str(desc))
    assert world(host) == before
    host.run("touch", "/run/netns/b-1")  # not the description's
    out = host.lxembed("net", "up", str(desc), check=False)
    assert out.returncode == 2 and "netns b-1: /run/netns/b-1 holds no namespace" in out.stderr
    assert "Traceback" not in out.stderr
    host.run("rm", "/run/netns/b-1")
    assert world(host) == before
