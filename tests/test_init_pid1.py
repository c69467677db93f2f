"""The Python init as PID 1 of a new pid namespace (`unshare -pf --mount-proc`, root): what a
container runtime gives it, minus the runtime. In the spirit of tini's own tests: the main
service's exit status is the init's, orphaned grandchildren are reaped, the stop signal reaches
the main service first; and a console nobody reads, or a failure anywhere in the init, never
stops reaping or a stop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from init_helpers import (
    LXINIT,
    NamespaceInit,
    alive,
    can_unshare,
    children_of,
    records,
    service,
    wait_until,
)

pytestmark = pytest.mark.skipif(not can_unshare(), reason="needs root and unshare")


@pytest.fixture
def start_pid1(tmp_path):
    """start_pid1(config, **kwargs) -> NamespaceInit; whatever it left is killed after."""
    started = []

    def start(config, **kwargs):
        kwargs.setdefault("env", {"container": "oci"})
        init = NamespaceInit(tmp_path, config, **kwargs)
        started.append(init)
        return init

    yield start
    for init in started:
        init.cleanup()


def stop(init, sig, timeout=10.0):
    """Send `sig` to the init; (its exit status as unshare reports it, seconds it took)."""
    sent = time.monotonic()
    init.send(sig)
    status = init.wait(timeout)
    return status, time.monotonic() - sent


def adopt_orphans(init, count=5, life=0.3):
    """Processes in the init's namespace whose parent exits at once: the init adopts them and
    must reap them when they end `life` seconds later. Returns their host pids."""
    cmd = "for i in $(seq %d); do sleep %s & done" % (count, life)
    before = {pid for pid, _ in children_of(init.pid)}
    subprocess.run(["nsenter", "-t", str(init.pid), "-p", "-m", "--", "sh", "-c", cmd],
                   check=True, timeout=10)
    orphans = [pid for pid, _ in children_of(init.pid) if pid not in before]
    assert len(orphans) >= count, "the orphans were not adopted by the init"
    return orphans


def no_zombies_under(pid):
    return not [p for p, state in children_of(pid) if state == "Z"]


# -- app semantics (tini, docker --init) ---------------------------------------------------

# A main service that leaves `count` orphaned grandchildren (each ends 0.1 s after its parent),
# waits, counts the zombies in its pid namespace and exits with `base` + that count.
APP = r"""
import os, sys, time
count, base = int(sys.argv[1]), int(sys.argv[2])
for _ in range(count):
    if os.fork() == 0:
        if os.fork() == 0:
            time.sleep(0.1)
            os._exit(0)
        os._exit(0)
    os.wait()
time.sleep(0.6)
zombies = 0
for name in os.listdir("/proc"):
    try:
        with open("/proc/%s/stat" % name, "rb") as f:
            zombies += f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        pass
print("zombies:", zombies)
sys.exit(base + zombies)
"""


def test_main_exit_status_is_the_inits_and_orphans_are_reaped(start_pid1, tmp_path):
    app = tmp_path / "app.py"
    app.write_text(APP)
    record = tmp_path / "record"
    init = start_pid1({
        "services": [
            service(tmp_path / "svc.py", "helper", record),
            {"name": "app", "main": True, "after": ["helper"],
             "command": [sys.executable, "-I", "-S", str(app), "50", "7"]},
        ],
    })
    assert init.wait(20) == 7  # 7 + no zombie among 50 orphaned grandchildren
    out = init.console()
    assert "[app] zombies: 0" in out
    assert "app: exit status 7: the main service ended" in out
    assert "helper: stopped (exit status 0)" in out  # the others are stopped, not left behind
    assert [r[1] for r in records(record)] == ["started", "term", "exit"]
    assert "container stopped, exit status 7" in out


@pytest.mark.parametrize("command,status", [
    (["sh", "-c", "kill -KILL $$"], 128 + signal.SIGKILL),
    (["sh", "-c", "exit 0"], 0),
    (["/nonexistent/app"], 127),
])
def test_main_status_as_a_shell_reports_it(start_pid1, command, status):
    init = start_pid1({"services": [{"name": "app", "main": True, "command": command},
                                    {"name": "other", "command": ["sleep", "60"]}]})
    assert init.wait(10) == status
    assert "other: stopped (killed by SIGTERM)" in init.console()


@pytest.mark.parametrize("trap,status", [(True, 3), (False, 128 + signal.SIGTERM)])
def test_stop_signal_goes_to_the_main_service_first(start_pid1, tmp_path, trap, status):
    record, stamp = tmp_path / "record", tmp_path / "app-term"
    on_term = 'date +%%s.%%N > %s; exit 3' % stamp
    script = ('trap "%s" TERM; ' % on_term if trap else "") + "touch %s.up; " % stamp
    script += "while :; do sleep 60 & wait; done" if trap else "exec sleep 60"
    # The app starts first: reverse start order alone would stop the helper first.
    init = start_pid1({"services": [
        {"name": "app", "main": True, "command": ["sh", "-c", script]},
        service(tmp_path / "svc.py", "helper", record, after=["app"]),
    ]})
    wait_until(lambda: records(record) and os.path.exists("%s.up" % stamp))
    got, took = stop(init, signal.SIGTERM)  # docker stop, crun kill
    assert got == status and took < 2.0
    out = init.console()
    assert out.index("app: stopped") < out.index("helper: stopped")
    if trap:
        helper_term = [t for _, what, t, _ in records(record) if what == "term"][0]
        assert float(stamp.read_text()) < helper_term


def test_stray_arguments_are_ignored_as_pid1(start_pid1, tmp_path):
    init = start_pid1({}, args=["--config", str(tmp_path / "init.json"), "quiet", "splash"])
    out = init.wait_console("lxembed-init: ready")
    assert "ignoring argument 'quiet'" in out and "ignoring argument 'splash'" in out
    assert stop(init, signal.SIGTERM)[0] == 0


# -- a console nobody reads ----------------------------------------------------------------


def test_flooding_an_unread_console_does_not_hold_up_a_stop(start_pid1, tmp_path):
    read_end, write_end = os.pipe()  # the console: nobody ever reads it
    record = tmp_path / "record"
    try:
        svcs = [{"name": "flood", "command": ["yes", "x" * 100]}]
        svcs += [service(tmp_path / "svc.py", "s%d" % i, record) for i in range(3)]
        init = start_pid1({"mode": "container", "services": svcs},
                          env={"container": "lxc"}, stdout=write_end)
        os.close(write_end)
        write_end = None
        wait_until(lambda: len(records(record)) == 3)
        log = tmp_path / "log" / "flood.log"
        wait_until(lambda: log.exists() and log.stat().st_size > 100_000)
        time.sleep(0.5)  # flooding, into a full console
        inside = init.inside()
        assert len(inside) == 4 and all(alive(p) for p in inside)
        got, took = stop(init, signal.SIGPWR)
        # LXC's halt: reboot(2) in a pid namespace ends the init with SIGINT.
        assert got == -signal.SIGINT
        assert took < 1.0, "SIGPWR to exit took %.2fs" % took
        assert not [p for p in inside if alive(p)]
        assert len([r for r in records(record) if r[1] == "exit"]) == 3  # none was SIGKILLed
    finally:
        for fd in (read_end, write_end):
            if fd is not None:
                os.close(fd)


# -- failures inside the init ----------------------------------------------------------------

# Runs lxinit.py with one of its functions replaced by one that raises: the init's own code is
# what runs, with a failure where no config could put one.
FAULT = r"""
import importlib.util, sys
path, where = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("lxinit", path)
lxinit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lxinit)
def broken(*args, **kwargs):
    raise RuntimeError("injected fault in " + where)
owner, _, name = where.rpartition(".")
setattr(getattr(lxinit, owner) if owner else lxinit, name, broken)
sys.exit(lxinit.main(sys.argv[3:]))
"""


@pytest.mark.parametrize("where,report", [
    ("load_config", "fatal error, still reaping: RuntimeError('injected fault in load_config')"),
    ("Init.__init__", "fatal error, still reaping"),
    ("Supervisor.start_due", "error starting services: RuntimeError"),
    ("Supervisor.pump", "error waiting: RuntimeError"),
    ("ServiceOutput.drain", "error copying output: RuntimeError"),
])
def test_a_failure_anywhere_keeps_reaping_and_obeys_the_stop_signal(start_pid1, tmp_path,
                                                                   where, report):
    fault = tmp_path / "fault.py"
    fault.write_text(FAULT)
    init = start_pid1({"services": [{"name": "s", "command": ["sleep", "60"]}]},
                      env={"container": "lxc"}, script=fault,
                      args=[str(LXINIT), where, "--config", str(tmp_path / "init.json")])
    init.wait_console(report)
    orphans = adopt_orphans(init)
    wait_until(lambda: not any(p in orphans for p, _ in children_of(init.pid)), timeout=5)
    assert no_zombies_under(init.pid)
    got, took = stop(init, signal.SIGPWR)
    assert got == -signal.SIGINT and took < 3.0  # halted as LXC expects
    assert init.console().count(report) == 1  # reported once, not once per pass


def test_a_failing_shutdown_still_ends_every_process(start_pid1, tmp_path):
    fault = tmp_path / "fault.py"
    fault.write_text(FAULT)
    init = start_pid1({"services": [{"name": "s", "command": ["sleep", "60"]}]},
                      env={"container": "lxc"}, script=fault,
                      args=[str(LXINIT), "Supervisor.shutdown", "--config",
                            str(tmp_path / "init.json")])
    init.wait_console("lxembed-init: ready")
    inside = init.inside()
    assert inside and all(alive(p) for p in inside)
    got, took = stop(init, signal.SIGPWR)  # one signal is enough: the stop goes on
    assert got == -signal.SIGINT and took < 3.0
    out = init.console()
    assert "still reaping: RuntimeError('injected fault in Supervisor.shutdown')" in out
    assert "sending SIGTERM to all processes" in out
    assert not [p for p in inside if alive(p)]


def test_bad_config_values_are_reported_and_the_rest_runs(start_pid1, tmp_path):
    init = start_pid1({
        "shutdown_grace": float("nan"),
        "log_max_bytes": -1,
        "network": {"interfaces": [{"dhcp": True}, "eth9"]},
        "services": [
            {"name": "a", "command": ["sleep", "60"], "stop_timeout": "soon"},
            {"name": "b", "command": ["sleep", "60"], "respawn": {"delay": -1}},
            {"name": "c", "command": ["sleep", "60"]},
        ],
    })
    out = init.wait_console("lxembed-init: ready")
    assert "shutdown_grace must be a number of seconds" in out
    assert "log_max_bytes must be a positive number of bytes" in out
    assert "a: stop_timeout must be a number of seconds, not 'soon'" in out
    assert "b: respawn delay must be a number of seconds" in out
    assert "interface None failed" in out and "interface eth9 failed" in out
    orphans = adopt_orphans(init)
    wait_until(lambda: not any(p in orphans for p, _ in children_of(init.pid)), timeout=5)
    got, took = stop(init, signal.SIGTERM)
    assert got == 0 and took < 2.0
    assert "c: stopped (killed by SIGTERM)" in init.console()


# -- network -----------------------------------------------------------------------------------


@pytest.fixture
def netns():
    """A network namespace holding a veth pair eth0/peer0: a parent for a VLAN."""
    name = "lxinit-test-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name",
                        "peer0"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def test_vlan_interface_is_made_on_its_link(start_pid1, tmp_path, netns):
    iface = {"name": "eth0.20", "vlan": 20, "link": "eth0", "ipv4": ["192.0.2.2/24"]}
    init = start_pid1({"network": {"interfaces": [iface]}}, netns=netns)
    out = init.wait_console("lxembed-init: ready")
    ip = ["ip", "-n", netns]
    show = subprocess.run(ip + ["-d", "addr", "show", "eth0.20"], capture_output=True, text=True)
    kernel_has_8021q = subprocess.run(
        ip + ["link", "add", "link", "eth0", "name", "probe.9", "type", "vlan", "id", "9"],
        capture_output=True).returncode == 0
    if kernel_has_8021q:
        assert "vlan protocol 802.1Q id 20" in show.stdout and "192.0.2.2/24" in show.stdout
    else:  # this host (no 8021q): the init ran the command and reported the kernel's refusal
        assert show.returncode != 0
        assert "link add link eth0 name eth0.20 type vlan id 20: exit status 2" in out
        assert "addr add" not in out  # nothing configured on an interface that is not there
    parent = subprocess.run(ip + ["link", "show", "eth0"], capture_output=True, text=True)
    assert ",UP" in parent.stdout  # tagged frames leave through the parent: it is up
    assert stop(init, signal.SIGTERM)[0] == 0


def test_vlan_without_link_is_reported(start_pid1, netns):
    init = start_pid1({"network": {"interfaces": [{"name": "eth0.30", "vlan": 30}]}},
                      netns=netns)
    out = init.wait_console("lxembed-init: ready")
    assert "eth0.30: a VLAN needs 'link', its parent interface: not configured" in out
    assert stop(init, signal.SIGTERM)[0] == 0
