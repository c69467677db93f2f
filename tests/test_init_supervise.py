"""The init's supervision (lxembed/init/lxinit.py, docs/init.md): readiness probes and
`requires`, health commands and the health file, ready_timeout, `--status`, shutdown waves, the
timeline, and a real LXC container as a service.

The init runs as a child subreaper (init_helpers.InitProcess: log_dir, ready_file, timeline,
health_file and healthy_file all in the test's directory). Times are compared on the init's
own timeline (CLOCK_MONOTONIC seconds) or on the services' records (time.time()).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from init_helpers import LXINIT, alive, children_of, records, service, wait_until

from lxembed.reports.timeline import spans, timeline_svg


def events(tmp_path: Path) -> list[dict]:
    """The init's timeline, in the order it was written."""
    path = tmp_path / "timeline"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def when(evs: list[dict], name: str, event: str, nth: int = 0) -> float:
    """The time of the nth `event` of `name`."""
    found = [e["t"] for e in evs if e["name"] == name and e["event"] == event]
    assert len(found) > nth, "no %s %s (#%d) in %s" % (name, event, nth, evs)
    return found[nth]


def health(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "health.json").read_text())


def status(config: Path) -> subprocess.CompletedProcess:
    """`lxinit.py --status --config PATH`, as a user on the device runs it."""
    return subprocess.run([sys.executable, "-I", "-S", str(LXINIT), "--status", "--config",
                           str(config)], capture_output=True, text=True, timeout=10)


def sleeper(name: str, **extra) -> dict:
    return dict({"name": name, "command": ["sleep", "60"]}, **extra)


# -- readiness: ready_file, requires, after -------------------------------------------------


def test_requires_and_after_wait_for_a_ready_file_others_start_at_once(start_init, tmp_path):
    flag = tmp_path / "db.ready"
    init = start_init({"services": [
        # Listed first: the order comes from requires/after, not from the list.
        sleeper("needs", requires=["db"]),
        sleeper("later", after=["db"]),
        {"name": "db", "ready_file": str(flag),
         "command": ["sh", "-c", "sleep 0.5; touch %s; exec sleep 60" % flag]},
        sleeper("alone"),
    ]})
    out = init.wait_console("lxembed-init: healthy\n")
    assert out.index("lxembed-init: db: ready") < out.index("lxembed-init: ready\n")
    evs = events(tmp_path)
    db_start, db_ready = when(evs, "db", "start"), when(evs, "db", "ready")
    assert 0.4 <= db_ready - db_start < 1.5  # the file appeared after 0.5 s: polled promptly
    assert db_ready <= when(evs, "needs", "start") < db_ready + 0.5
    assert db_ready <= when(evs, "later", "start") < db_ready + 0.5
    assert when(evs, "alone", "start") < db_start + 0.2  # in parallel with db, not after it
    assert when(evs, "alone", "start") < db_ready
    assert when(evs, "init", "ready") >= when(evs, "needs", "start")
    h = health(tmp_path)
    assert h["healthy"] and h["booted"] and h["unhealthy"] == []
    assert h["services"]["db"] == {"state": "running", "ready": True, "healthy": True,
                                   "restarts": 0}
    init.send(signal.SIGTERM)
    assert init.wait() == 0


def test_a_dependant_starts_as_soon_as_its_dependency_is_ready(start_init, tmp_path):
    # Found ready by a stat in probe_due(), not by a child's exit: no signal wakes the loop, so
    # the same pass must start the dependants (it once waited up to 5 s, or health_interval).
    flag = tmp_path / "db.ready"
    init = start_init({"services": [
        {"name": "db", "ready_file": str(flag),
         "command": ["sh", "-c", "sleep 0.2; touch %s; exec sleep 60" % flag]},
        sleeper("needs", requires=["db"]),
    ]})
    init.wait_console("lxembed-init: db: ready", timeout=3)
    wait_until(lambda: [e for e in events(tmp_path) if e["name"] == "needs"], timeout=1.5)
    evs = events(tmp_path)
    assert when(evs, "needs", "start") - when(evs, "db", "ready") < 0.5
    init.wait_console("lxembed-init: ready\n", timeout=0.5)


def test_a_transitively_blocked_service_does_not_hold_up_ready(start_init, tmp_path):
    init = start_init({"services": [
        {"name": "setup", "type": "oneshot", "command": ["false"]},
        sleeper("mid", requires=["setup"]),
        sleeper("top", requires=["mid"]),
    ]})
    init.wait_console("lxembed-init: ready\n", timeout=1.5)


def test_after_a_blocked_service_still_starts(start_init, tmp_path):
    init = start_init({"services": [
        {"name": "setup", "type": "oneshot", "command": ["false"]},
        sleeper("mid", requires=["setup"]),
        sleeper("late", after=["mid"]),
    ]})
    init.wait_console("lxembed-init: ready\n", timeout=1.5)
    assert when(events(tmp_path), "late", "start")


# -- health_command, unhealthy_after, the health file and marker --------------------------


def test_health_command_gives_readiness_and_an_unhealthy_service_is_restarted(start_init,
                                                                               tmp_path):
    flag, record, healthy = tmp_path / "ok", tmp_path / "record", tmp_path / "healthy"
    web = service(tmp_path / "svc.py", "web", record, type="respawn",
                  health_command="test -e %s" % flag, health_interval=0.2,
                  health_timeout=1, unhealthy_after=0.6)
    init = start_init({"services": [web]})
    pid = wait_until(lambda: [r[3] for r in records(record) if r[1] == "started"])[0]
    time.sleep(0.5)  # running, but its probe fails: not ready yet
    assert not health(tmp_path)["services"]["web"]["ready"] and not healthy.exists()
    assert "web: ready" not in init.console()
    flag.touch()
    init.wait_console("lxembed-init: healthy\n", timeout=3)
    assert healthy.exists() and health(tmp_path)["healthy"]

    flag.unlink()  # the probe starts failing
    out = init.wait_console("lxembed-init: web: health probe failed", timeout=3)
    wait_until(lambda: not healthy.exists(), timeout=2)
    h = health(tmp_path)
    assert not h["healthy"] and h["unhealthy"] == ["web"]
    assert h["services"]["web"]["ready"] and not h["services"]["web"]["healthy"]
    out = init.wait_console("lxembed-init: web: unhealthy for 0.6s, restarting", timeout=3)
    assert "lxembed-init: unhealthy: web" in out
    assert out.index("health probe failed") < out.index("unhealthy for 0.6s, restarting")
    wait_until(lambda: len([r for r in records(record) if r[1] == "started"]) == 2
               and [e for e in events(tmp_path) if e["event"] == "restart"], timeout=3)
    assert not alive(pid)
    evs = events(tmp_path)
    assert 0.55 <= when(evs, "web", "kill") - when(evs, "web", "unhealthy") < 1.5
    assert when(evs, "web", "restart") > when(evs, "web", "exit")
    assert not healthy.exists()  # restarted, but not ready again until its probe passes

    flag.touch()
    wait_until(lambda: init.console().count("lxembed-init: healthy\n") == 2, timeout=3)
    assert healthy.exists()
    h = health(tmp_path)
    assert h["healthy"] and h["services"]["web"] == {"state": "running", "ready": True,
                                                     "healthy": True, "restarts": 1}
    init.send(signal.SIGTERM)
    assert init.wait() == 0
    assert not healthy.exists() and not health(tmp_path)["healthy"]


def test_a_probe_past_health_timeout_is_killed_and_fails(start_init, tmp_path):
    pids = tmp_path / "probes"
    probe = "echo $$ >> %s; exec sleep 30" % pids
    init = start_init({"services": [sleeper("hang", health_command=probe, health_timeout=0.3)]})
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) >= 2, timeout=3)
    first = int(pids.read_text().split()[0])
    assert not alive(first)  # killed after 0.3 s, then probed again
    assert not health(tmp_path)["services"]["hang"]["ready"]
    assert "hang: ready" not in init.console()
    init.send(signal.SIGTERM)
    assert init.wait() == 0
    assert not [p for p in map(int, pids.read_text().split()) if alive(p)]


# -- ready_timeout ---------------------------------------------------------------------------


def test_ready_timeout_restarts_with_backoff_and_lets_after_go_on(start_init, tmp_path):
    init = start_init({"services": [
        sleeper("never", type="respawn", ready_file=str(tmp_path / "never-there"),
                ready_timeout=0.3, respawn={"delay": 0.1, "max_delay": 0.4, "burst": 100}),
        sleeper("patient", after=["never"]),
        sleeper("dependent", requires=["never"]),
    ]})
    out = init.wait_console("lxembed-init: ready\n", timeout=3)
    assert "lxembed-init: never: not ready after 0.3s, restarting" in out
    wait_until(lambda: len([e for e in events(tmp_path) if e["event"] == "restart"]) >= 3
               and health(tmp_path)["services"]["never"]["restarts"] >= 3, timeout=5)
    evs = events(tmp_path)
    starts = [e["t"] for e in evs if e["name"] == "never" and e["event"] in ("start", "restart")]
    kills = [e["t"] for e in evs if e["name"] == "never" and e["event"] == "kill"]
    exits = [e["t"] for e in evs if e["name"] == "never" and e["event"] == "exit"]
    assert all(0.28 <= k - s < 0.8 for s, k in zip(starts, kills)), (starts, kills)
    gaps = [s - x for x, s in zip(exits, starts[1:])]  # the respawn delays: 0.1, 0.2, 0.4
    # Each at least its delay (a late reap can only lengthen one): the backoff doubles.
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39, gaps
    # after: it waited for the first start to fail, no longer; requires: never started.
    assert kills[0] <= when(evs, "patient", "start") < kills[0] + 0.3
    assert not [e for e in evs if e["name"] == "dependent"]
    assert when(evs, "init", "ready") >= kills[0]
    out = init.console()
    assert "lxembed-init: never: killed by SIGKILL, respawning" in out
    assert "lxembed-init: healthy" not in out and not (tmp_path / "healthy").exists()
    h = health(tmp_path)
    assert h["booted"] and not h["healthy"] and h["services"]["dependent"]["state"] == "pending"
    assert h["services"]["never"]["restarts"] >= 3
    st = status(tmp_path / "init.json")
    assert st.returncode == 1, st
    assert st.stdout.splitlines()[-1] == "unhealthy: never, dependent", st.stdout
    assert re.search(r"^never +(running|waiting) +- +restarts [3-9]", st.stdout, re.M), st.stdout
    init.send(signal.SIGTERM)
    assert init.wait() == 0


# -- --status --------------------------------------------------------------------------------


def test_status_exit_codes_and_rows(start_init, tmp_path):
    marker = tmp_path / "started"
    lonely = tmp_path / "lonely.json"
    lonely.write_text(json.dumps({"health_file": str(tmp_path / "nothing.json"),
                                  "services": [{"name": "m", "command": ["touch", str(marker)]}]}))
    st = status(lonely)
    assert st.returncode == 2 and st.stdout == "", st
    assert "no health recorded (is the init running?)" in st.stderr
    (tmp_path / "nothing.json").write_text("{broken")
    assert status(lonely).returncode == 2
    assert not marker.exists()  # --status starts nothing

    init = start_init({"services": [sleeper("up"), {"name": "once", "type": "oneshot",
                                                     "command": ["true"]}]})
    init.wait_console("lxembed-init: healthy\n")
    st = status(tmp_path / "init.json")
    assert st.returncode == 0, st
    lines = st.stdout.splitlines()
    assert re.fullmatch(r"up +running +ready +restarts 0", lines[0]), lines
    assert re.fullmatch(r"once +done +ready +restarts 0", lines[1]), lines
    assert lines[2:] == ["healthy"]

    up = [p for p, _ in children_of(init.pid)]
    assert len(up) == 1
    os.kill(up[0], signal.SIGTERM)  # a simple service that dies is not healthy
    init.wait_console("lxembed-init: unhealthy: up\n")
    st = status(tmp_path / "init.json")
    assert st.returncode == 1, st
    assert re.search(r"^up +failed +- +restarts 0$", st.stdout, re.M), st.stdout
    assert st.stdout.splitlines()[-1] == "unhealthy: up"
    init.send(signal.SIGTERM)
    assert init.wait() == 0
    assert status(tmp_path / "init.json").returncode == 1  # a stopped init is not healthy


def test_status_during_a_shutdown_does_not_say_booting(start_init, tmp_path):
    record = tmp_path / "record"
    init = start_init({"services": [
        service(tmp_path / "svc.py", "stubborn", record, mode="ignore", stop_timeout=4)]})
    init.wait_console("lxembed-init: healthy\n")
    # Started is not yet deaf to SIGTERM: wait for the service to say it is running.
    wait_until(lambda: [r for r in records(record) if r[1] == "started"], timeout=5)
    init.send(signal.SIGTERM)
    init.wait_console("stopping services")
    st = status(tmp_path / "init.json")
    assert st.returncode == 1, st
    assert init.proc.poll() is None  # still stopping stubborn
    assert st.stdout.splitlines()[-1] == "unhealthy: stopping", st.stdout


# -- shutdown order --------------------------------------------------------------------------


def test_shutdown_stops_the_main_service_then_dependants_first(start_init, tmp_path):
    record, script = tmp_path / "record", tmp_path / "svc.py"
    init = start_init({"services": [
        service(script, "c", record, after=["b"]),
        service(script, "b", record, requires=["a"]),
        service(script, "a", record),
        service(script, "app", record, main=True),
    ]})
    init.wait_console("lxembed-init: healthy\n")
    wait_until(lambda: len(records(record)) == 4)
    init.send(signal.SIGTERM)
    assert init.wait() == 0
    recs = records(record)
    terms = [(n, t) for n, what, t, _ in recs if what == "term"]
    exits = {n: t for n, what, t, _ in recs if what == "exit"}
    assert [n for n, _ in terms] == ["app", "c", "b", "a"]
    term = dict(terms)
    # One wave at a time: the next is asked to stop once the last has exited.
    assert exits["app"] <= term["c"] and exits["c"] <= term["b"] and exits["b"] <= term["a"]
    stops = [e["name"] for e in events(tmp_path) if e["event"] == "stop"]
    assert stops == ["app", "c", "b", "a"]
    assert "SIGKILL" not in init.console()


def test_independent_services_stop_together_each_within_its_own_timeout(start_init, tmp_path):
    record, script = tmp_path / "record", tmp_path / "svc.py"
    init = start_init({"services": [
        service(script, "base", record),
        # Started after quick: one at a time in reverse start order, stubborn would go first.
        service(script, "quick", record, after=["base"]),
        service(script, "stubborn", record, mode="ignore", stop_timeout=1.5, after=["base"]),
    ]})
    init.wait_console("lxembed-init: healthy\n")
    wait_until(lambda: len(records(record)) == 3)
    stubborn = [r[3] for r in records(record) if r[0] == "stubborn"][0]
    sent = time.time()
    init.send(signal.SIGTERM)
    assert init.wait() == 0
    took = time.time() - sent
    recs = {(n, what): t for n, what, t, _ in records(record)}
    assert recs[("quick", "exit")] - sent < 0.5  # not held up by stubborn's 1.5 s
    assert ("stubborn", "term") not in recs and not alive(stubborn)
    assert recs[("base", "term")] - sent >= 1.5  # base waited for both of its dependants
    assert 1.5 <= took < 3.5
    out = init.console()
    assert "stubborn: still running after 1.5s: SIGKILL" in out
    assert "quick: stopped (exit status 0)" in out and "base: stopped (exit status 0)" in out
    assert out.index("quick: stopped") < out.index("stubborn: still running")


# -- the timeline ----------------------------------------------------------------------------


def test_timeline_events_and_their_gantt_chart(start_init, tmp_path):
    flag = tmp_path / "db.ready"
    init = start_init({"services": [
        {"name": "prep", "type": "oneshot", "command": ["sh", "-c", "sleep 0.1"]},
        {"name": "db", "ready_file": str(flag), "after": ["prep"],
         "command": ["sh", "-c", "sleep 0.3; touch %s; exec sleep 60" % flag]},
        sleeper("app", requires=["db"]),
    ]})
    init.wait_console("lxembed-init: healthy\n")
    init.send(signal.SIGTERM)
    assert init.wait() == 0
    evs = events(tmp_path)
    assert all(set(e) == {"t", "name", "event"} for e in evs)
    assert evs[0]["name"] == "init" and evs[0]["event"] == "start"
    times = [e["t"] for e in evs]
    assert times == sorted(times)
    seq = [(e["name"], e["event"]) for e in evs]
    # A oneshot is ready once it has exited; a service, before it is asked to stop.
    assert seq.index(("prep", "start")) < seq.index(("prep", "exit")) < seq.index(("prep", "ready"))
    for name in ("db", "app"):
        assert seq.index((name, "start")) <= seq.index((name, "ready")) < seq.index((name, "stop"))
        assert seq.index((name, "stop")) < seq.index((name, "exit"))
    assert seq.index(("prep", "exit")) < seq.index(("db", "start"))
    assert seq.index(("db", "ready")) < seq.index(("app", "start"))
    assert seq.index(("init", "ready")) < seq.index(("init", "healthy"))
    assert seq.index(("init", "healthy")) < seq.index(("init", "stopping"))
    assert when(evs, "db", "ready") - when(evs, "db", "start") >= 0.25

    # As `lxembed test --timeline` draws a device's boot; on a host CLOCK_MONOTONIC is the
    # host's uptime, so the events are moved to start at 0 first.
    t0 = evs[0]["t"]
    moved = [dict(e, t=e["t"] - t0) for e in evs]
    db_spans = [s for s in spans(moved) if s.name == "db"]
    assert [s.phase for s in db_spans] == ["starting", "running", "stopping"]
    assert db_spans[0].end == pytest.approx(when(moved, "db", "ready"))
    svg = ET.fromstring(timeline_svg(moved, "supervise <test>"))
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.tag == ns + "svg"
    assert svg.find(ns + "text").text == "supervise <test>"
    labels = [t.text for t in svg.iter(ns + "text") if t.get("text-anchor") == "end"]
    assert labels == ["prep", "db", "app"]
    bars = {}
    for rect in svg.iter(ns + "rect"):
        title = rect.find(ns + "title")
        if title is not None:
            bars.setdefault(title.text.split(":")[0], []).append(float(rect.get("x")))
    assert set(bars) == {"prep", "db", "app"}
    assert min(bars["prep"]) < min(bars["db"]) < min(bars["app"])


# -- a real LXC container as a service -------------------------------------------------------

PYTHON = "/usr/bin/python3"


def _lxc_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    missing = [t for t in ("lxc-start", "lxc-info", "lxc-stop") if not shutil.which(t)]
    if missing:
        return "%s not installed" % ", ".join(missing)
    if not os.path.exists(PYTHON):
        return "no %s on the host" % PYTHON
    return None


def write_container(lxcpath: Path, name: str) -> Path:
    """LXCPATH/NAME/config and a bind-host rootfs (the host's /usr read-only) whose PID 1 is
    this init, running one service; its console goes to LXCPATH/console.log."""
    rootfs = lxcpath / name / "rootfs"
    for d in ("usr", "proc", "sys", "dev", "run", "tmp", "etc", ".lxembed"):
        (rootfs / d).mkdir(parents=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        (rootfs / link).symlink_to("usr/" + link)
    shutil.copy(LXINIT, rootfs / ".lxembed/lxinit.py")
    inner = {"services": [{"name": "app", "command": ["sh", "-c", "echo up; exec sleep 600"]}]}
    (rootfs / ".lxembed/init.json").write_text(json.dumps(inner))
    (lxcpath / name / "config").write_text("\n".join([
        "lxc.uts.name = %s" % name,
        "lxc.rootfs.path = dir:%s" % rootfs,
        "lxc.mount.entry = /usr usr none ro,bind 0 0",
        "lxc.mount.auto = proc:mixed sys:ro",
        "lxc.autodev = 1",
        "lxc.net.0.type = empty",
        "lxc.init.cmd = %s -I -S /.lxembed/lxinit.py --config /.lxembed/init.json" % PYTHON,
        "lxc.environment = PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "lxc.console.logfile = %s" % (lxcpath / "console.log"),
        "lxc.log.file = %s" % (lxcpath / "lxc.log"),
        "lxc.log.level = INFO",
        "",
    ]))
    return rootfs


@pytest.mark.lxc
@pytest.mark.skipif(_lxc_skip() is not None, reason=_lxc_skip() or "")
def test_container_service_ready_restarted_after_kill_and_halted(start_init, tmp_path):
    from lxembed.runners.containers import remove_lock_dir

    lxcpath, name = tmp_path / "lxc", "sup%d" % os.getpid()
    write_container(lxcpath, name)
    info = ["lxc-info", "-P", str(lxcpath), "-n", name, "-H"]

    def lxc_info(flag: str) -> str:
        return subprocess.run(info + [flag], capture_output=True, text=True,
                              timeout=10).stdout.strip()

    def inner_console() -> str:
        path = lxcpath / "console.log"
        return path.read_text(errors="replace") if path.exists() else ""

    box = {"name": "box", "container": {"name": name, "path": str(lxcpath)},
           "ready_file": "/run/lxembed/ready", "stop_timeout": 10}
    init = start_init({"services": [box]})
    try:
        out = init.wait_console("lxembed-init: healthy\n", timeout=20)
        assert "lxembed-init: box: ready" in out
        assert "[box]" not in out  # lxc-start's output goes to the log only
        monitor = [p for p, _ in children_of(init.pid)]
        assert len(monitor) == 1 and b"lxc-start" in Path("/proc/%d/cmdline" % monitor[0]
                                                           ).read_bytes()
        first = int(lxc_info("-p"))
        assert first in [p for p, _ in children_of(monitor[0])]  # the monitor's child
        assert os.path.exists("/proc/%d/root/run/lxembed/ready" % first)
        assert "lxembed-init: ready" in inner_console()

        t0 = time.monotonic()
        os.kill(first, signal.SIGKILL)
        out = init.wait_console("respawning in 1s", timeout=10)
        assert re.search(r"lxembed-init: box: container stopped \(lxc-start: [^)]*\), "
                         r"respawning in 1s", out), out
        wait_until(lambda: init.console().count("lxembed-init: box: ready") == 2, timeout=20)
        assert time.monotonic() - t0 >= 1.0  # the container backoff
        wait_until(lambda: (Path(tmp_path / "healthy").exists()
                            and health(tmp_path)["services"]["box"]["restarts"] == 1), timeout=5)
        second = int(lxc_info("-p"))
        assert second != first and not alive(first)
        assert lxc_info("-s") == "RUNNING"

        init.send(signal.SIGTERM)
        assert init.wait(20) == 0
        out = init.console()
        assert "lxembed-init: box: stopped (exit status 0)" in out, out
        assert "SIGKILL" not in out, out
        assert inner_console().count("lxembed-init: SIGPWR: halt") == 1  # the halt signal
        assert lxc_info("-s") == "STOPPED"
        assert not alive(second)
        left = [p for p in os.listdir("/proc") if p.isdigit() and str(lxcpath).encode()
                in _cmdline(int(p))]
        assert not left, left
        # (A probe may see the killed container gone before lxc-start exits: "unhealthy".)
        evs = [e["event"] for e in events(tmp_path) if e["name"] == "box"
               and e["event"] not in ("unhealthy", "healthy")]
        assert evs == ["start", "ready", "exit", "restart", "ready", "stop", "exit"], evs
    finally:
        init.cleanup()
        subprocess.run(["lxc-stop", "-P", str(lxcpath), "-n", name, "-k"],
                       capture_output=True, timeout=30)
        remove_lock_dir(lxcpath)
        print(init.console(), inner_console(), sep="\n-- inside:\n")


def _cmdline(pid: int) -> bytes:
    try:
        return Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return b""
