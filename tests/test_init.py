"""The Python init (lxembed/init/lxinit.py), run as a child subreaper: no root tricks, no mocks."""

from __future__ import annotations

import ast
import functools
import glob
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from init_helpers import (
    LXINIT,
    alive,
    children_of,
    proc_stat,
    records,
    service,
    wait_until,
)


def load_lxinit():
    spec = importlib.util.spec_from_file_location("lxinit_under_test", LXINIT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the file itself --------------------------------------------------------------------------


def test_parses_as_python37_and_imports_only_stdlib():
    tree = ast.parse(LXINIT.read_text(), feature_version=(3, 7))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, "relative import in lxinit.py"
            imported.add(node.module.split(".")[0])
    assert "lxembed" not in imported
    stdlib = getattr(sys, "stdlib_module_names", None)
    if stdlib:
        assert imported <= set(stdlib), imported - set(stdlib)


@functools.lru_cache(maxsize=None)
def python37():
    """A working Python 3.7 interpreter (pyenv shims may exist without one), or None."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.7*/bin/python3.7")))
    candidates += [shutil.which("python3.7") or "python3.7"]
    for exe in candidates:
        check = "import sys; sys.exit(sys.version_info[:2] != (3, 7))"
        try:
            if subprocess.run([exe, "-c", check], capture_output=True, timeout=10).returncode == 0:
                return exe
        except (OSError, subprocess.SubprocessError):
            pass
    return None


@pytest.mark.skipif(python37() is None, reason="no python3.7 on this machine")
def test_runs_under_python37(start_init, tmp_path):
    init = start_init(
        {"services": [{"name": "hi", "type": "oneshot", "command": ["echo", "hi"]}]},
        python=python37(),
    )
    out = init.wait_console("lxembed-init: ready")
    assert "[hi] hi" in out
    init.send(signal.SIGTERM)
    assert init.wait() == 0


def test_imports_only_c_modules_at_start():
    """Every Python-level module is boot time under emulation: `os` (posixpath, stat,
    _collections_abc), `ctypes` (struct, types), `signal` and `json` (enum, re) stay out. What
    the init imports is what -X importtime names beyond a bare start (as the build's probe)."""

    def imported(*args):
        result = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", *args],
                                capture_output=True, text=True, timeout=60, check=True)
        return {line.split("|")[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:") and "imported package" not in line}

    modules = imported(str(LXINIT), "--help") - imported("-c", "pass")
    assert modules <= {"posix", "errno", "_signal", "_json", "_ctypes", "fcntl"}, modules
    assert {"_json", "_ctypes"} <= modules  # the probe measures something


def test_its_os_functions_behave_as_os(tmp_path):
    """_PosixOs (what the init has instead of `import os`) against os and posixpath."""
    import posixpath

    fake = load_lxinit().os
    for parts in [("/a", "b"), ("/a/", "b"), ("", "b"), ("a", "/b"), ("a", "b", "c"),
                  (".", "prog"), ("/run/lxembed/log", "svc.log")]:
        assert fake.path.join(*parts) == posixpath.join(*parts), parts
    for path in ["/a/b", "/a/b/", "/", "//", "a", "", "/a//b", "//a", "/run/lxembed/ready"]:
        assert fake.path.dirname(path) == posixpath.dirname(path), path
    (tmp_path / "file").write_text("x")
    for path in [tmp_path, tmp_path / "file", tmp_path / "nope", "bad\0path"]:
        path = str(path)
        assert (fake.path.exists(path), fake.path.isfile(path), fake.isdir(path)) == (
            os.path.exists(path), os.path.isfile(path), os.path.isdir(path)), path
    deep = str(tmp_path / "x" / "y" / "z")
    fake.makedirs(deep, exist_ok=True)
    fake.makedirs(deep, exist_ok=True)
    assert os.path.isdir(deep)
    with pytest.raises(FileExistsError):
        fake.makedirs(deep)
    with pytest.raises(FileExistsError):  # a file in the way is no directory, exist_ok or not
        fake.makedirs(str(tmp_path / "file"), exist_ok=True)
    assert fake.environ == dict(os.environ)
    assert fake.WEXITSTATUS is os.WEXITSTATUS and fake.O_NONBLOCK == os.O_NONBLOCK


def test_order_services_breaks_cycles_and_keeps_config_order():
    lxinit = load_lxinit()
    cfg = dict(lxinit.DEFAULTS)
    specs = [
        {"name": "a", "command": ["true"], "after": ["c"]},
        {"name": "b", "command": ["true"]},
        {"name": "c", "command": ["true"], "after": ["d"]},
        {"name": "d", "command": ["true"], "after": ["c", "nosuch"]},
    ]
    order = lxinit.order_services([lxinit.Service(s, cfg) for s in specs])
    names = [s.name for s in order]
    assert names[0] == "b"  # the only service that waits for nothing
    assert names.index("c") < names.index("a") and sorted(names) == ["a", "b", "c", "d"]
    assert all(set(s.after) <= set(names[: names.index(s.name)]) for s in order)


# -- start-up ---------------------------------------------------------------------------------


def test_ready_marker_after_oneshots_and_ready_file(start_init, tmp_path):
    init = start_init(
        {
            "services": [
                {"name": "slow", "type": "oneshot", "command": ["sh", "-c", "sleep 0.3; echo ok"]},
                {"name": "daemon", "command": ["sleep", "60"]},
            ]
        }
    )
    out = init.wait_console("lxembed-init: ready\n")
    assert out.index("[slow] ok") < out.index("lxembed-init: ready")
    assert (tmp_path / "ready").exists()
    init.send(signal.SIGTERM)  # no container= and not PID 1: the OCI table, SIGTERM stops
    assert init.wait() == 0
    assert not (tmp_path / "ready").exists()  # a stopping system is not ready any more


@pytest.mark.parametrize(
    "config", [None, "{not json", '["a list"]'], ids=["missing", "broken", "not-object"]
)
def test_bad_config_keeps_running_and_obeys_signals(start_init, tmp_path, config):
    init = start_init(config, env={"container": "lxc"})
    out = init.wait_console("lxembed-init: ready")
    assert "running without services" in out
    time.sleep(0.3)
    assert init.proc.poll() is None
    init.send(signal.SIGTERM)  # not in the LXC table: ignored
    init.wait_console("ignoring SIGTERM")
    assert init.proc.poll() is None
    init.send(signal.SIGPWR)
    assert init.wait() == 0
    assert "would halt now" in init.console()


def test_config_from_environment(start_init, tmp_path):
    cfg = tmp_path / "elsewhere.json"
    cfg.write_text('{"services": [{"name": "e", "type": "oneshot", "command": ["echo", "E"]}]}')
    init = start_init(None, env={"LXINIT_CONFIG": str(cfg)}, args=[])
    out = init.wait_console("lxembed-init: ready")
    assert "[e] E" in out
    init.send(signal.SIGINT)
    assert init.wait() == 0


@pytest.mark.parametrize("args", [["quiet"], ["--config", "x.json", "single"], ["--confg=x"]])
def test_stray_argument_on_a_host_starts_nothing(start_init, tmp_path, args):
    marker = tmp_path / "started"
    init = start_init({"services": [{"name": "m", "command": ["touch", str(marker)]}]},
                      args=args)
    assert init.wait(5) == 2
    out = init.console()
    assert out.startswith("lxinit.py: unexpected argument") and "usage: lxinit.py" in out
    assert "lxembed-init" not in out and not marker.exists()


def test_help_prints_usage_and_starts_nothing(start_init, tmp_path):
    init = start_init({"services": [{"name": "m", "command": ["sleep", "60"]}]},
                      args=["--help"])
    assert init.wait(5) == 0
    assert init.console().startswith("usage: lxinit.py [--config PATH]")
    assert not children_of(init.pid)


def test_after_ordering_cycles_and_bad_services(start_init, tmp_path):
    order = tmp_path / "order"

    def step(name, delay=0):
        return ["sh", "-c", "sleep %s; echo %s >> %s" % (delay, name, order)]

    init = start_init(
        {
            "services": [
                {"name": "c", "type": "oneshot", "after": ["b"], "command": step("c")},
                {"name": "b", "type": "oneshot", "after": ["a"], "command": step("b")},
                {"name": "a", "type": "oneshot", "command": step("a", 0.3)},
                {"name": "x", "type": "oneshot", "after": ["y"], "command": ["true"]},
                {"name": "y", "type": "oneshot", "after": ["x"], "command": ["true"]},
                {"name": "nocmd", "type": "oneshot"},
                {"name": "badtype", "type": "forking", "command": ["true"]},
                {"name": "missing", "type": "oneshot", "command": ["/nonexistent/prog"]},
            ]
        }
    )
    out = init.wait_console("lxembed-init: ready")
    assert order.read_text().split() == ["a", "b", "c"]
    assert "ordering cycle" in out
    assert "nocmd: command must be" in out and "badtype: type must be" in out
    assert "[missing] lxembed-init: cannot run /nonexistent/prog" in out
    assert "missing: exit status 127" in out
    init.send(signal.SIGTERM)
    assert init.wait() == 0


def test_environment_workdir_user_and_clean_signal_state(start_init, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    svcs = [
        {
            "name": "env",
            "type": "oneshot",
            "command": ["sh", "-c", 'echo "GREETING=$GREETING PWD=$(pwd)"'],
            "environment": {"GREETING": "hello world"},
            "workdir": str(work),
        },
        # cat execs directly from the init: its mask and ignored set are what the init gave it
        {"name": "sigstate", "type": "oneshot", "command": ["cat", "/proc/self/status"]},
    ]
    if os.getuid() == 0:
        svcs.append({"name": "nobody", "type": "oneshot", "user": 65534, "command": ["id"]})
    init = start_init({"services": svcs})
    out = init.wait_console("lxembed-init: ready")
    assert "[env] GREETING=hello world PWD=%s" % work in out
    assert "[sigstate] SigBlk:\t0000000000000000" in out
    assert "[sigstate] SigIgn:\t0000000000000000" in out
    if os.getuid() == 0:
        assert "[nobody] uid=65534" in out and "gid=65534" in out
    log = (tmp_path / "log" / "env.log").read_text()
    assert log == "GREETING=hello world PWD=%s\n" % work
    init.send(signal.SIGTERM)
    assert init.wait() == 0


def test_output_is_copied_promptly(start_init, tmp_path):
    # The init sleeps in sigtimedwait (up to 5 s); SIGIO from the pipe must wake it at once.
    stamp = tmp_path / "stamp"
    cmd = ["sh", "-c", "sleep 0.5; touch %s; echo late; exec sleep 60" % stamp]
    init = start_init({"services": [{"name": "talker", "command": cmd}]})
    init.wait_console("lxembed-init: ready")
    wait_until(stamp.exists, timeout=5, interval=0.005)
    written = time.monotonic()
    init.wait_console("[talker] late\n", timeout=5)
    assert time.monotonic() - written < 1.0
    init.send(signal.SIGTERM)
    assert init.wait() == 0


def test_service_log_is_size_capped(start_init, tmp_path):
    line = "x" * 99
    init = start_init(
        {
            "log_max_bytes": 4000,
            "services": [
                {
                    "name": "chatty",
                    "type": "oneshot",
                    "command": ["sh", "-c", "for i in $(seq 500); do echo %s; done" % line],
                }
            ],
        }
    )
    out = init.wait_console("lxembed-init: ready")
    assert out.count("[chatty] " + line) == 500
    log = tmp_path / "log" / "chatty.log"
    old = tmp_path / "log" / "chatty.log.1"
    assert 0 < log.stat().st_size <= 4000 and 3900 <= old.stat().st_size <= 4000
    assert set(old.read_text().splitlines()) == {line}
    init.send(signal.SIGTERM)
    assert init.wait() == 0


def test_console_output_that_does_not_fit_is_dropped_counted_and_reported(start_init, tmp_path):
    read_end, write_end = os.pipe()  # the console: read only once the flood is over
    line, count = "y" * 99, 20000  # 2.1 MB with prefixes; the console holds 64 KB + 64 KB
    cmd = [sys.executable, "-c", "import sys; sys.stdout.write(%r * %d)" % (line + "\n", count)]
    init = start_init({"services": [{"name": "flood", "type": "oneshot", "command": cmd}]},
                      stdout=write_end)
    os.close(write_end)
    wait_until((tmp_path / "ready").exists)  # the flood has ended, the console still full
    time.sleep(0.2)
    assert (tmp_path / "log" / "flood.log").stat().st_size > 0
    received = bytearray()
    reader = threading.Thread(target=read_into, args=(read_end, received))
    reader.start()
    wait_until(lambda: b"bytes of console output dropped" in received)
    init.send(signal.SIGTERM)  # and it still stops as asked
    assert init.wait() == 0
    reader.join(10)
    lines = bytes(received).decode().splitlines()
    flood = [x for x in lines if x.startswith("[flood] ")]
    assert set(flood) == {"[flood] " + line}  # only whole lines
    assert 64 * 1024 // 108 <= len(flood) < count  # the buffer was used; the rest dropped
    dropped = sum(int(x.split()[1]) for x in lines if x.endswith("bytes of console output dropped"))
    missing = count * len("[flood] " + line + "\n") - len(flood) * len("[flood] " + line + "\n")
    # Counted to the byte: the flood's missing lines, and maybe a few of the init's own.
    assert missing <= dropped <= missing + 200


def test_a_console_that_keeps_up_gets_everything(start_init, tmp_path):
    # The console is a file here: the init writes big batches straight through, dropping none.
    line, count = "z" * 99, 20000
    cmd = [sys.executable, "-c", "import sys; sys.stdout.write(%r * %d)" % (line + "\n", count)]
    init = start_init({"services": [{"name": "burst", "type": "oneshot", "command": cmd}]})
    out = init.wait_console("lxembed-init: ready")
    assert out.count("[burst] " + line + "\n") == count and "dropped" not in out
    init.send(signal.SIGTERM)
    assert init.wait() == 0


def read_into(fd, out):
    """Read fd to its end into the bytearray `out`, as it comes."""
    with os.fdopen(fd, "rb", buffering=0) as f:
        for chunk in iter(lambda: f.read(65536), b""):
            out.extend(chunk)


# -- PID 1 duties -----------------------------------------------------------------------------

ORPHANS = r"""
import os, sys, time
n, done, ppid_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
for i in range(n):
    child = os.fork()
    if child == 0:
        me = os.getpid()
        if os.fork() == 0:
            while os.getppid() == me:  # exit only once orphaned, so the init has to reap us
                time.sleep(0.001)
            if i == 0:
                with open(ppid_file, "w") as f:
                    f.write(str(os.getppid()))
        os._exit(0)
    os.waitpid(child, 0)
open(done, "w").close()
"""


def test_thousand_orphaned_zombies_are_reaped(start_init, tmp_path):
    script = tmp_path / "orphans.py"
    script.write_text(ORPHANS)
    done, ppid_file = tmp_path / "done", tmp_path / "adopter"
    cmd = [sys.executable, "-I", "-S", str(script), "1000", str(done), str(ppid_file)]
    init = start_init({"services": [{"name": "orphans", "type": "oneshot", "command": cmd}]})
    init.wait_console("lxembed-init: ready", timeout=30)
    assert done.exists()
    assert int(wait_until(ppid_file.read_text)) == init.pid  # orphans were adopted by the init
    # No zombie (and nothing else) may be left under the init.
    wait_until(lambda: not children_of(init.pid), timeout=5)
    assert init.proc.poll() is None
    init.send(signal.SIGTERM)
    assert init.wait() == 0


def test_respawn_storm_is_throttled(start_init, tmp_path):
    count = tmp_path / "count"
    init = start_init(
        {
            "respawn": {"delay": 0.05, "burst": 4, "interval": 10, "throttle": 30},
            "services": [
                {
                    "name": "crash",
                    "type": "respawn",
                    "command": ["sh", "-c", "echo x >> %s" % count],
                }
            ],
        }
    )
    init.wait_console("respawning too fast (4 starts in 10s): throttled for 30s")
    time.sleep(1.5)
    assert len(count.read_text().split()) == 4
    init.send(signal.SIGTERM)
    assert init.wait() == 0


def test_respawn_restarts_with_backoff(start_init, tmp_path):
    count = tmp_path / "count"
    init = start_init(
        {
            "services": [
                {
                    "name": "flaky",
                    "type": "respawn",
                    "command": ["sh", "-c", "echo x >> %s; exit 1" % count],
                    "respawn": {"delay": 0.2, "max_delay": 0.4, "burst": 100},
                }
            ],
        }
    )
    wait_until(lambda: count.exists() and len(count.read_text().split()) >= 4, timeout=5)
    first = time.monotonic()
    wait_until(lambda: len(count.read_text().split()) >= 6, timeout=5)
    assert time.monotonic() - first >= 0.6  # two restarts at the capped 0.4 s delay
    init.send(signal.SIGTERM)
    assert init.wait() == 0


def test_sigpwr_stops_ten_services_in_reverse_order(start_init, tmp_path):
    record = tmp_path / "record"
    names = ["s%d" % i for i in range(10)]
    # Listed backwards, each after the one before it: the start order comes from `after`.
    svcs = [
        service(tmp_path / "svc.py", n, record, after=[names[i - 1]] if i else [])
        for i, n in reversed(list(enumerate(names)))
    ]
    init = start_init({"shutdown_grace": 5, "services": svcs}, env={"container": "lxc"})
    init.wait_console("lxembed-init: ready")
    wait_until(lambda: len([r for r in records(record) if r[1] == "started"]) == 10)
    pids = {r[0]: r[3] for r in records(record)}
    sent = time.time()
    init.send(signal.SIGPWR)
    assert init.wait() == 0
    exited = time.time()
    assert not [n for n, pid in pids.items() if alive(pid)], "a service outlived the init"
    recs = records(record)
    terms = [n for n, what, _, _ in recs if what == "term"]
    assert sorted(terms) == names
    assert terms == list(reversed(names))  # reverse start order
    exits = {n: t for n, what, t, _ in recs if what == "exit"}
    assert sorted(exits) == names  # every service exited by itself: none was SIGKILLed
    assert all(sent <= t <= exited for t in exits.values())
    out = init.console()
    assert "SIGKILL" not in out and out.count("stopped (exit status 0)") == 10
    assert "SIGPWR: halt" in out and "would halt now" in out


def test_service_ignoring_sigterm_is_killed_after_grace(start_init, tmp_path):
    record = tmp_path / "record"
    svcs = [
        service(tmp_path / "svc.py", "good", record),
        service(tmp_path / "svc.py", "stubborn", record, mode="ignore", stop_timeout=0.5),
    ]
    init = start_init({"services": svcs}, env={"container": "lxc"})
    wait_until(lambda: len(records(record)) == 2)
    stubborn = [r[3] for r in records(record) if r[0] == "stubborn"][0]
    sent = time.monotonic()
    init.send(signal.SIGINT)  # LXC: reboot
    assert init.wait() == 0
    took = time.monotonic() - sent
    assert 0.5 <= took < 3.0
    assert not alive(stubborn)
    out = init.console()
    assert "stubborn: still running after 0.5s: SIGKILL" in out
    assert "stubborn: stopped (killed by SIGKILL)" in out
    assert "good: stopped (exit status 0)" in out and "would reboot now" in out
    assert [r[:2] for r in records(record) if r[1] != "started"] == [
        ("good", "term"),
        ("good", "exit"),
    ]


def test_leftover_processes_are_killed_and_reaped(start_init, tmp_path):
    pidfile = tmp_path / "leftover"
    # A daemon that left the service's process group and ignores SIGTERM: only the final
    # sweep over the init's descendants can get rid of it.
    daemon = "trap '' TERM; echo $$ > %s; exec sleep 60" % pidfile
    cmd = ["sh", "-c", 'setsid sh -c "%s" & sleep 60' % daemon]
    init = start_init({"shutdown_grace": 0.3, "services": [{"name": "parent", "command": cmd}]})
    leftover = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip()))
    init.send(signal.SIGTERM)
    assert init.wait() == 0
    out = init.console()
    assert "sending SIGTERM to all remaining processes" in out
    assert "sending SIGKILL to all remaining processes" in out
    assert proc_stat(leftover) is None or not alive(leftover)


@pytest.mark.parametrize(
    "env,config,sig,action",
    [
        ({"container": "lxc"}, {}, signal.SIGINT, "reboot"),
        ({"container": "lxc"}, {}, signal.SIGUSR2, "poweroff"),
        ({"container": "podman"}, {}, signal.SIGTERM, "poweroff"),
        ({}, {"signals": "busybox"}, signal.SIGUSR1, "halt"),
        ({}, {"signals": "busybox"}, signal.SIGUSR2, "poweroff"),
        ({}, {"signals": "busybox"}, signal.SIGTERM, "reboot"),
    ],
)
def test_signal_tables(start_init, env, config, sig, action):
    init = start_init(config, env=env)
    init.wait_console("lxembed-init: ready")
    init.send(sig)
    assert init.wait() == 0
    out = init.console()
    assert "%s: %s" % (signal.Signals(sig).name, action) in out
    assert "would %s now" % action in out


@pytest.mark.parametrize("text", [
    '{"hostname": "gw", "services": [{"name": "a", "command": ["/bin/true"], "after": []}]}',
    ' [1, -2.5e3, true, false, null, "\\u00e9\\n", {"nested": {"deep": [[]]}}] \n',
    '{"x": NaN, "y": -Infinity}',
    '"just a string"',
])
def test_parse_json_agrees_with_json_loads(text):
    parsed = load_lxinit().parse_json(text)
    expected = json.loads(text)
    assert repr(parsed) == repr(expected)  # repr: NaN != NaN


@pytest.mark.parametrize("text", ['{"a": 1,}', '{"a" 1}', "[1] trailing", "", "{'a': 1}"])
def test_parse_json_rejects_what_json_rejects(text):
    with pytest.raises(ValueError):
        load_lxinit().parse_json(text)


# -- the build's side of `main` ---------------------------------------------------------------


def test_main_reaches_the_inits_config_and_only_one_service_may_be_main(tmp_path):
    from lxembed.config import load_plan
    from lxembed.containers import container_spec
    from lxembed.errors import UserError
    from lxembed.rootfs.python_init import init_config

    recipe = tmp_path / "app.toml"
    app = '[[services]]\nname = "%s"\ncommand = ["/bin/app"]\nmain = true\n'
    recipe.write_text('base = "container-bind"\n\n' + app % "app")
    plan = load_plan("qemu-x86_64", str(recipe))
    lxinit = load_lxinit()
    for cfg in (init_config(plan), init_config(plan, container_spec(plan))):
        specs = json.loads(json.dumps(cfg))["services"]  # as the init reads them
        services = [lxinit.Service(s, lxinit.DEFAULTS) for s in specs]
        assert [s.name for s in services if s.main] == ["app"]
        assert "hello" in [s.name for s in services]
    recipe.write_text('base = "container-bind"\n\n' + app % "app" + "\n" + app % "second")
    with pytest.raises(UserError, match=r"app.toml:11: more than one main service: app, second"):
        load_plan("qemu-x86_64", str(recipe))
