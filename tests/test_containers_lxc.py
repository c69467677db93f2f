"""Real containers: container-bind under LXC and crun, networks (veth on a bridge, macvlan,
phys), the legacy config after lxc-update-config, and `lxembed run` stopped with Ctrl-C.

Every container lives in a private lxcpath (`lxc-start -P tmpdir`): nothing lands in
/var/lib/lxc. Bridges and veths are made with pyroute2 and removed even when a test fails.
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
from pathlib import Path

import pytest
from conftest import wait_for

from lxembed.config import Plan, load_plan
from lxembed.config.loader import load_board, load_recipe
from lxembed.containers.lxc_config import parse_lxc_config
from lxembed.pipeline import build_image
from lxembed.runners.containers import remove_lock_dir

pytestmark = [pytest.mark.slow, pytest.mark.lxc]
ROOT = Path(__file__).resolve().parents[1]
READY = "lxembed-init: ready"
HOST_BOARD = 'arch = "amd64"\nsuite = "bookworm"\n'  # no [qemu]: no kernel modules to fetch


def _skip_reason():
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("lxc-start", "lxc-stop", "lxc-attach", "lxc-update-config"):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install lxc)"
    return None


if _skip_reason():
    pytestmark.append(pytest.mark.skip(reason=_skip_reason()))



class Lxc:
    """One container started with lxc-start -d from a config lxembed wrote."""

    def __init__(self, name: str, config: Path, lxcpath: Path):
        self.name, self.config, self.lxcpath = name, config, lxcpath
        lxcpath.mkdir(parents=True, exist_ok=True)
        self.console = lxcpath / f"{name}.console"
        self.log = lxcpath / f"{name}.log"

    def _cmd(self, tool: str, *args: str) -> list:
        return [tool, "-P", str(self.lxcpath), "-n", self.name, *args]

    def start(self) -> None:
        subprocess.run(
            self._cmd(
                "lxc-start",
                "-d",
                "-f",
                str(self.config),
                "-L",
                str(self.console),
                "-o",
                str(self.log),
                "-l",
                "INFO",
            ),
            check=True,
            stdin=subprocess.DEVNULL,
        )

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def wait_ready(self, timeout: float = 10) -> None:
        if not wait_for(lambda: READY in self.console_text(), timeout):
            pytest.fail(f"{self.name} not ready:\n{self.console_text()}\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text().splitlines()[-15:]) if self.log.exists() else ""

    def attach(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            self._cmd("lxc-attach", "--", "/bin/sh", "-c", command),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            pytest.fail(f"{command}: {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def running(self) -> bool:
        out = subprocess.run(self._cmd("lxc-info", "-sH"), capture_output=True, text=True)
        return out.stdout.strip() == "RUNNING"

    def stop(self) -> float:
        start = time.monotonic()
        subprocess.run(
            self._cmd("lxc-stop", "--rcfile", str(self.config), "-t", "10"),
            check=True,
            capture_output=True,
        )
        return time.monotonic() - start

    def kill(self) -> None:
        subprocess.run(self._cmd("lxc-stop", "-k"), capture_output=True)


@pytest.fixture
def containers(tmp_path):
    """Started containers, killed at the end whatever happened."""
    made = []
    yield made
    for c in made:
        if c.running():
            c.kill()
        remove_lock_dir(c.lxcpath)


@pytest.fixture
def links():
    """Names of host links a test made; deleted (with pyroute2) at the end."""
    from pyroute2 import IPRoute

    names = []
    yield names
    with IPRoute() as ipr:
        for name in names:
            for index in ipr.link_lookup(ifname=name):
                ipr.link("del", index=index)


def ipr_call(fn):
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return fn(ipr)


def make_link(
    links: list, ifname: str, kind: str, peer: str = None, address: str = None, master: str = None
) -> None:
    def go(ipr):
        kw = {"peer": peer} if peer else {}
        links.append(ifname)
        ipr.link("add", ifname=ifname, kind=kind, **kw)
        index = ipr.link_lookup(ifname=ifname)[0]
        if master:
            ipr.link("set", index=index, master=ipr.link_lookup(ifname=master)[0])
        if address:
            ip, prefix = address.split("/")
            ipr.addr("add", index=index, address=ip, prefixlen=int(prefix))
        ipr.link("set", index=index, state="up")
        if peer:
            ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], state="up")

    ipr_call(go)


def build(tmp_path: Path, recipe_text: str, name: str, fmt: str = "lxc") -> Path:
    (tmp_path / "host.toml").write_text(HOST_BOARD)
    (tmp_path / f"{name}.toml").write_text(recipe_text)
    plan = Plan(
        load_board(str(tmp_path / "host.toml")),
        load_recipe(str(tmp_path / f"{name}.toml")),
        1704067200,
    )
    out = tmp_path / f"out-{name}"
    build_image(plan, out, [fmt])
    return out


def bind_recipe(hostname: str, networks: str = "", services: str = "") -> str:
    return f'hostname = "{hostname}"\n{services}\n[container]\nmode = "bind-host"\n{networks}'


SLEEPER = """[[services]]
name = "sleeper"
command = ["/bin/sh", "-c",
           "trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 60 & wait; done"]
"""


def host_ping(address: str) -> None:
    subprocess.run(["ping", "-c", "1", "-W", "2", address], check=True, capture_output=True)


# -- container-bind ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bind_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("bind")
    build_image(load_plan("qemu-x86_64", "container-bind"), out, ["lxc", "oci"])
    return out


def test_container_bind_runs_the_hosts_python(bind_build, tmp_path, containers):
    # Written in a stage and swapped in: the config names where the rootfs is now.
    rootfs = dict(parse_lxc_config((bind_build / "lxc/config").read_text()))["lxc.rootfs.path"]
    assert rootfs == f"dir:{bind_build.resolve()}/lxc/rootfs"
    du = subprocess.run(
        ["du", "-sk", str(bind_build / "lxc/rootfs")], capture_output=True, text=True, check=True
    )
    # A skeleton and the init's compressed source (24 KB), not a copy of /usr: ~100 KB of blocks.
    assert int(du.stdout.split()[0]) < 128, du.stdout
    c = Lxc("container-bind", bind_build / "lxc/config", tmp_path / "run")
    containers.append(c)
    c.start()
    c.wait_ready()
    out = c.attach("python3 -c 'import sys; print(sys.version_info[0])'").stdout
    assert out.strip() == "3"
    erofs = c.attach('python3 -c \'open("/usr/lxembed-test", "w")\' 2>&1', check=False)
    assert erofs.returncode != 0 and "Read-only file system" in erofs.stdout
    assert c.attach("hostname").stdout.strip() == "container-bind"
    ps = c.attach("ps -e -o pid=,comm=").stdout.split("\n")
    procs = [line.split() for line in ps if line.strip()]
    assert procs[0] == ["1", "python3"], procs
    assert {p[1] for p in procs} <= {"python3", "sh", "ps"}, procs
    assert len(procs) <= 4


def test_lxc_stop_is_fast_and_clean(tmp_path, containers):
    out = build(tmp_path, bind_recipe("stopper", services=SLEEPER), "stopper")
    c = Lxc("stopper", out / "lxc/config", tmp_path / "run")
    containers.append(c)
    c.start()
    c.wait_ready()
    deadline = time.monotonic() + 10  # ready means started: wait until its trap is set
    while "[sleeper] up" not in c.console_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    seconds = c.stop()
    assert seconds < 1.0, seconds
    console = c.console_text()
    assert "[sleeper] bye" in console and "SIGKILL" not in console, console
    # reboot(2) with RB_HALT_SYSTEM in a PID namespace ends the init with SIGINT: a clean halt.
    assert re.search(r"ended on signal Interrupt", c.log.read_text()), c.log_tail()


def test_busybox_self_contained(tmp_path, containers):
    out = tmp_path / "bb"
    build_image(load_plan("qemu-x86_64", "container-busybox"), out, ["lxc"])
    c = Lxc("container-busybox", out / "lxc/config", tmp_path / "run")
    containers.append(c)
    c.start()
    assert wait_for(lambda: "lxembed: ready" in c.console_text(), 10), c.console_text()
    assert c.attach("hostname").stdout.strip() == "container-busybox"
    assert c.attach("readlink /bin/sh").stdout.strip() == "/bin/busybox"
    assert c.stop() < 5  # busybox init always pauses 2 x 1 s while halting


def test_python_self_contained(tmp_path, containers):
    out = tmp_path / "py"
    build_image(load_plan("qemu-x86_64", "container-python"), out, ["lxc"])
    c = Lxc("container-python", out / "lxc/config", tmp_path / "run")
    containers.append(c)
    c.start()
    c.wait_ready()
    # The image's own python3.11 (not the host's): /usr is the image's.
    assert "/usr/bin/python3.11" in c.attach("cat /proc/1/cmdline | tr '\\0' ' '").stdout
    assert c.stop() < 1.0
    assert "SIGKILL" not in c.console_text()


# -- networks ----------------------------------------------------------------------------------


def test_veth_on_a_bridge(tmp_path, containers, links):
    make_link(links, "lxe-br0", "bridge", address="10.99.0.1/24")
    mac = "02:12:34:56:78:9a"
    net = f"""[[container.network]]
type = "veth"
link = "lxe-br0"
veth_pair = "lxe-vh0"
hwaddr = "{mac}"
ipv4 = ["10.99.0.2/24"]
ipv4_gateway = "10.99.0.1"
mtu = 1400
"""
    out = build(tmp_path, bind_recipe("veth", net), "veth")
    c = Lxc("veth", out / "lxc/config", tmp_path / "run")
    containers.append(c)
    c.start()
    c.wait_ready()
    host_ping("10.99.0.2")
    c.attach("ping -c 1 -W 2 10.99.0.1")
    assert c.attach("cat /sys/class/net/eth0/address").stdout.strip() == mac
    assert c.attach("cat /sys/class/net/eth0/mtu").stdout.strip() == "1400"
    assert "default via 10.99.0.1" in c.attach("ip route").stdout

    def host_view(ipr):
        (link,) = ipr.get_links(ipr.link_lookup(ifname="lxe-vh0")[0])
        bridge = ipr.link_lookup(ifname="lxe-br0")[0]
        neigh = [n.get("NDA_LLADDR") for n in ipr.get_neighbours(dst="10.99.0.2")]
        return link.get("IFLA_MASTER") == bridge, neigh

    on_bridge, neighbours = ipr_call(host_view)
    assert on_bridge and neighbours == [mac]


def test_macvlan_bridge_between_two_containers(tmp_path, containers, links):
    make_link(links, "lxe-mv0", "veth", peer="lxe-mv1")
    for i in (1, 2):
        net = f"""[[container.network]]
type = "macvlan"
link = "lxe-mv0"
macvlan_mode = "bridge"
ipv4 = ["10.98.0.{i}/24"]
"""
        out = build(tmp_path, bind_recipe(f"mv{i}", net), f"mv{i}")
        c = Lxc(f"mv{i}", out / "lxc/config", tmp_path / "run")
        containers.append(c)
        c.start()
    for c in containers:
        c.wait_ready()
    containers[0].attach("ping -c 1 -W 2 10.98.0.2")
    containers[1].attach("ping -c 1 -W 2 10.98.0.1")
    macs = [c.attach("cat /sys/class/net/eth0/address").stdout.strip() for c in containers]
    assert macs[0] != macs[1] and all(int(m[:2], 16) & 2 for m in macs)


def test_phys_handover(tmp_path, containers, links):
    make_link(links, "lxe-ph0", "veth", peer="lxe-ph1", address="10.97.0.1/24")
    links.append("lxe-ph1")
    net = """[[container.network]]
type = "phys"
link = "lxe-ph1"
name = "eth1"
ipv4 = ["10.97.0.2/24"]
"""
    out = build(tmp_path, bind_recipe("phys", net), "phys")
    c = Lxc("phys", out / "lxc/config", tmp_path / "run")
    containers.append(c)
    c.start()
    c.wait_ready()
    assert ipr_call(lambda ipr: ipr.link_lookup(ifname="lxe-ph1")) == []  # moved in
    host_ping("10.97.0.2")
    c.attach("ping -c 1 -W 2 10.97.0.1")
    c.stop()
    # LXC hands a phys device back to the host when the container stops.
    assert wait_for(lambda: ipr_call(lambda ipr: ipr.link_lookup(ifname="lxe-ph1")), 5)


# -- legacy config -----------------------------------------------------------------------------


def test_legacy_config_converted_runs_the_same(tmp_path, containers, links):
    make_link(links, "lxe-br1", "bridge", address="10.95.0.1/24")
    net = """[[container.network]]
type = "veth"
link = "lxe-br1"
veth_pair = "lxe-vl0"
ipv4 = ["10.95.0.2/24"]
ipv4_gateway = "10.95.0.1"
"""
    # One container name for both: the derived MAC depends on it.
    recipe = bind_recipe("legacy", 'name = "legacy"\n' + net)
    modern = build(tmp_path, recipe, "modern")
    legacy = build(tmp_path, recipe.replace("[[", 'lxc_version = "2.0"\n[[', 1), "legacy")
    converted = legacy / "lxc/config"
    text = converted.read_text()
    assert "lxc.utsname" in text and "lxc.network.type" in text
    subprocess.run(
        ["lxc-update-config", "-c", str(converted)], check=True, cwd=tmp_path, capture_output=True
    )
    # What LXC 2.0 cannot carry: lxembed's own keys that came in 3.x (the header names them).
    assert "left out, unknown to LXC 2.0: lxc.rootfs.managed, lxc.cgroup2." in text
    want = [
        (k, v.replace(str(modern), str(legacy)))
        for k, v in parse_lxc_config((modern / "lxc/config").read_text())
        if k != "lxc.rootfs.managed" and not k.startswith("lxc.cgroup2.")
    ]
    assert parse_lxc_config(converted.read_text()) == want
    c = Lxc("legacy", converted, tmp_path / "run")
    containers.append(c)
    c.start()
    c.wait_ready()
    host_ping("10.95.0.2")
    assert c.stop() < 1.0


# -- OCI and `lxembed run` ---------------------------------------------------------------------


def crun_command() -> list:
    if not shutil.which("crun"):
        pytest.skip("crun is not installed (apt-get install crun)")
    if os.path.ismount("/sys/fs/cgroup/unified"):
        # crun refuses a hybrid hierarchy; hide cgroup2 in a private mount namespace (tests only).
        return [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            'umount -l /sys/fs/cgroup/unified && exec crun "$@"',
            "crun",
        ]
    return ["crun"]


def test_oci_bundle_runs_under_crun(bind_build, tmp_path):
    crun = crun_command()
    name = f"lxembed-test-{os.getpid()}"
    console = tmp_path / "console"
    with open(console, "wb") as fh:
        proc = subprocess.Popen(
            crun + ["run", "--bundle", str(bind_build / "oci"), name],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        assert wait_for(lambda: READY in console.read_text(), 10), console.read_text()

        def exec_(cmd):
            return subprocess.run(
                crun + ["exec", name, "/bin/sh", "-c", cmd], capture_output=True, text=True
            )

        assert exec_("hostname").stdout.strip() == "container-bind"
        assert "Read-only" in exec_("touch /usr/x 2>&1").stdout
        assert exec_("cat /proc/1/comm").stdout.strip() == "python3"
        start = time.monotonic()
        subprocess.run(crun + ["kill", name, "TERM"], check=True)
        assert proc.wait(10) == 0
        assert time.monotonic() - start < 1.0
        assert "container stopped" in console.read_text()
    finally:
        if proc.poll() is None:
            subprocess.run(crun + ["kill", name, "KILL"], capture_output=True)
            proc.wait(5)
        subprocess.run(crun + ["delete", "-f", name], capture_output=True)


def apparmor_enabled() -> bool:
    try:
        return Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y"
    except OSError:
        return False


def crun_until_ready(crun: list, bundle: Path, name: str, console: Path) -> int:
    """Run the bundle until the init is ready, stop it with SIGTERM; crun's exit status."""
    with open(console, "wb") as fh:
        proc = subprocess.Popen(crun + ["run", "--bundle", str(bundle), name],
                                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)
    try:
        if wait_for(lambda: READY in console.read_text() or proc.poll() is not None, 10):
            if proc.poll() is None:
                subprocess.run(crun + ["kill", name, "TERM"], check=True)
        return proc.wait(10)
    finally:
        if proc.poll() is None:
            subprocess.run(crun + ["kill", name, "KILL"], capture_output=True)
            proc.wait(5)
        subprocess.run(crun + ["delete", "-f", name], capture_output=True)


def test_oci_apparmor_unconfined_runs_under_crun(tmp_path):
    """`apparmor = "unconfined"` is no process.apparmorProfile key: crun refuses the key on a
    host without AppArmor, even for "unconfined"."""
    crun = crun_command()
    out = build(tmp_path, bind_recipe("aa") + 'apparmor = "unconfined"\n', "aa", fmt="oci")
    bundle = out / "oci"
    doc = json.loads((bundle / "config.json").read_text())
    assert "apparmorProfile" not in doc["process"]
    name = f"lxembed-aa-{os.getpid()}"
    assert crun_until_ready(crun, bundle, name, tmp_path / "console") == 0
    assert READY in (tmp_path / "console").read_text()
    if not apparmor_enabled():
        # What the key itself does here: the reason it is not written.
        doc["process"]["apparmorProfile"] = "unconfined"
        (bundle / "config.json").write_text(json.dumps(doc))
        assert crun_until_ready(crun, bundle, name, tmp_path / "console2") != 0
        assert "AppArmor" in (tmp_path / "console2").read_text()


@pytest.mark.parametrize("runtime", ["lxc", "oci"])
def test_lxembed_run_stops_on_ctrl_c(tmp_path, runtime):
    args = [
        sys.executable,
        "-m",
        "lxembed",
        "run",
        "-b",
        "qemu-x86_64",
        "-r",
        "container-bind",
        "-o",
        str(tmp_path / "out"),
        "--runtime",
        runtime,
    ]
    if runtime == "oci":
        args += ["--oci-runtime", " ".join(f"'{a}'" for a in crun_command())]
    output = tmp_path / "output"
    with open(output, "wb") as fh:
        proc = subprocess.Popen(
            args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        assert wait_for(lambda: READY in output.read_text(), 60, 0.05), output.read_text()
        start = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert proc.wait(10) == 0, output.read_text()
        assert time.monotonic() - start < 2.0
        text = output.read_text()
        assert ("lxembed-init: halt" if runtime == "lxc" else "container stopped") in text
        assert "SIGKILL" not in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
