"""libvirt LXC domains: the XML lxembed writes validates against libvirt's own schema
(virt-xml-validate) for every container recipe, settings libvirt cannot say are refused or
warned about, and container-bind runs for real under a libvirtd the test starts itself (only the
LXC driver, in its own mount namespace: ../shared/FACTS.md, libvirt) and stops cleanly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

import pytest
from conftest import wait_for

from lxembed.cli import main
from lxembed.config import Plan, load_plan
from lxembed.config.loader import load_board, load_recipe
from lxembed.containers import container_spec
from lxembed.containers.libvirt import METADATA_NS, UNLIMITED_KIB, libvirt_domain
from lxembed.containers.network import stable_mac
from lxembed.pipeline import build_image

ROOT = Path(__file__).resolve().parents[1]
EPOCH = 1704067200
HOST_BOARD = 'arch = "amd64"\nsuite = "bookworm"\n'
ARM_BOARD = 'arch = "armhf"\nsuite = "bookworm"\n'
LXC_DRIVER = Path("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_lxc.so")
URI = "lxc:///"
# What a failed test may leave defined or running.
TEST_DOMAINS = ("container-bind", "container-busybox", "lxembed-lv-net")


def need_validator() -> None:
    for tool in ("virt-xml-validate", "xmllint"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (apt-get install libvirt-clients libxml2-utils)")


def validate(text: str, tmp_path: Path) -> None:
    path = tmp_path / "domain.xml"
    path.write_text(text)
    validate_file(path)


def validate_file(path: Path) -> None:
    out = subprocess.run(["virt-xml-validate", str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and "validates" in out.stderr, out.stdout + out.stderr


def mount_at(dom: ET.Element, target: str) -> ET.Element:
    """The <filesystem> mounted at `target` (ElementTree has no predicate on a child's
    attribute)."""
    found = [f for f in dom.findall("devices/filesystem") if f.find("target").get("dir") == target]
    assert len(found) == 1, target
    return found[0]


def plan_of(tmp_path: Path, recipe: str, board: str = HOST_BOARD) -> Plan:
    (tmp_path / "b.toml").write_text(board)
    (tmp_path / "c.toml").write_text(recipe)
    return Plan(load_board(str(tmp_path / "b.toml")), load_recipe(str(tmp_path / "c.toml")), EPOCH)


NETWORKED = """hostname = "net"
packages = ["busybox-static"]
init = "busybox"
[container]
name = "net"
mode = "self-contained"
readonly = true
devices = ["c 10:200 rwm", "c 4:65 rw"]
idmap = ["u 0 100000 65536", "g 0 100000 65536"]
environment = { LANG = "C.UTF-8" }
tmpfs = ["/run", "/tmp", "/var/cache"]
[container.limits]
memory = "64M"
[[container.mounts]]
source = "/srv/data"
target = "/data"
[[container.mounts]]
source = "tmpfs"
target = "/scratch"
type = "tmpfs"
options = ["rw", "size=8M"]
[[container.network]]
type = "veth"
link = "br0"
veth_pair = "vnet0"
ipv4 = ["10.0.3.2/24"]
ipv4_gateway = "10.0.3.1"
ipv6 = ["fd00::2/64"]
mtu = 1400
[[container.network]]
type = "veth"
veth_pair = "vnet1"
[[container.network]]
type = "macvlan"
link = "eth9"
macvlan_mode = "bridge"
[[container.network]]
type = "phys"
link = "eth8"
name = "eth8"
"""


@pytest.mark.parametrize("recipe", ["container-bind", "container-busybox", "container-python"])
def test_shipped_recipes_validate(recipe, tmp_path):
    need_validator()
    spec = container_spec(load_plan("qemu-x86_64", recipe))
    text, _ = libvirt_domain(spec, "/var/lib/x/rootfs", "qemu-x86_64", recipe)
    validate(text, tmp_path)
    dom = ET.fromstring(text)
    assert dom.get("type") == "lxc" and dom.findtext("name") == spec.name
    assert dom.find("os/type").get("arch") == "x86_64"
    assert [dom.findtext("os/init")] + [a.text for a in dom.findall("os/initarg")] == spec.init_cmd
    root = mount_at(dom, "/")
    assert root.find("source").get("dir") == "/var/lib/x/rootfs"
    assert int(dom.findtext("memory")) == UNLIMITED_KIB  # no limit in these recipes
    assert dom.find("features/privnet") is not None  # no network: lo only, not the host's
    stop = dom.find(f"metadata/{{{METADATA_NS}}}container").get("stop-signal")
    assert stop == spec.signals["stop"]
    if recipe == "container-bind":
        usr = mount_at(dom, "/usr")
        assert usr.find("source").get("dir") == "/usr" and usr.find("readonly") is not None
        ram = {f.find("target").get("dir") for f in dom.findall("devices/filesystem[@type='ram']")}
        assert ram == {"/run", "/tmp"}


def test_every_setting_maps(tmp_path, capsys):
    need_validator()
    spec = container_spec(plan_of(tmp_path, NETWORKED))
    text, warnings = libvirt_domain(spec, "/r")
    validate(text, tmp_path)
    dom = ET.fromstring(text)
    assert dom.findtext("memory") == str(64 << 10) and dom.find("memory").get("unit") == "KiB"
    assert mount_at(dom, "/").find("readonly") is not None
    assert [e.get("name") for e in dom.findall("os/initenv")] == ["PATH", "LANG"]
    caps = dom.find("features/capabilities")
    assert caps.get("policy") == "allow"
    assert {c.tag for c in caps} == set(spec.cap_drop) and {c.get("state") for c in caps} == {"off"}
    assert [(m.get("start"), m.get("target"), m.get("count")) for m in dom.find("idmap")] == [
        ("0", "100000", "65536")] * 2
    bridge, ethernet = dom.findall("devices/interface[@type='bridge']") + dom.findall(
        "devices/interface[@type='ethernet']")
    assert bridge.find("source").get("bridge") == "br0"
    assert bridge.find("target").get("dev") == "vnet0" and ethernet.find("target").get("dev") == \
        "vnet1"
    assert bridge.find("mac").get("address") == stable_mac("net", "eth0")
    assert bridge.find("guest").get("dev") == "eth0" and bridge.find("mtu").get("size") == "1400"
    assert [(i.get("address"), i.get("prefix")) for i in bridge.findall("ip")] == [
        ("10.0.3.2", "24"), ("fd00::2", "64")]
    assert bridge.find("route").get("gateway") == "10.0.3.1"
    direct = dom.find("devices/interface[@type='direct']/source")
    assert (direct.get("dev"), direct.get("mode")) == ("eth9", "bridge")
    assert dom.findtext("devices/hostdev[@type='net']/source/interface") == "eth8"
    assert [h.findtext("source/char") for h in dom.findall("devices/hostdev[@type='misc']")] == [
        "/dev/net/tun", "/dev/ttyS1"]
    scratch = mount_at(dom, "/scratch").find("source")
    assert scratch.get("usage") == str(8 << 10)
    data = mount_at(dom, "/data")
    assert data.find("source").get("dir") == "/srv/data" and data.find("readonly") is not None
    # The mount options nosuid,nodev of [[container.mounts]] #1 cannot be said: a warning with
    # its line, not a silent drop; lxembed's own options on its tmpfs mounts go unmentioned.
    recipe = tmp_path / "c.toml"
    assert any(w.startswith(f"{recipe}:") and "nosuid,nodev of /data" in w for w in warnings)
    assert any("c 4:65 rw" in w and "read-write" in w for w in warnings)
    assert not any("/var/cache" in w or "/run" in w for w in warnings), warnings
    assert any("send-process-signal net 1 SIGUSR1" in w for w in warnings)  # busybox init


def test_foreign_arch_names_libvirts_arch(tmp_path):
    need_validator()
    recipe = 'hostname = "a"\npackages = ["busybox-static"]\ninit = "busybox"\n[container]\n'
    text, _ = libvirt_domain(container_spec(plan_of(tmp_path, recipe, ARM_BOARD)), "/r")
    validate(text, tmp_path)
    assert ET.fromstring(text).find("os/type").get("arch") == "armv7l"


def test_share_host_network_has_no_privnet(tmp_path):
    recipe = 'hostname = "a"\n[container]\nmode = "bind-host"\n[[container.network]]\n' \
             'type = "none"\n'
    text, _ = libvirt_domain(container_spec(plan_of(tmp_path, recipe)), "/r")
    assert ET.fromstring(text).find("features/privnet") is None


def test_container_config_prints_the_domain(tmp_path, capsys):
    code = main(["container-config", "-b", "qemu-x86_64", "-r", "container-busybox", "--runtime",
                 "libvirt", "-o", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 0
    dom = ET.fromstring(captured.out)
    assert mount_at(dom, "/").find("source").get("dir") == str(tmp_path / "o/libvirt/rootfs")
    assert "send-process-signal container-busybox 1 SIGUSR1" in dom.findtext("description")
    assert "busybox init reboots on SIGTERM" in " ".join(captured.err.split())  # a warning


def build_cli(tmp_path: Path, recipe: str):
    (tmp_path / "b.toml").write_text(HOST_BOARD)
    (tmp_path / "bad.toml").write_text(recipe)
    out = tmp_path / "out"
    code = main(["-q", "build", "-b", str(tmp_path / "b.toml"), "-r", str(tmp_path / "bad.toml"),
                 "-o", str(out), "-f", "libvirt"])
    return code, out


BIND = 'hostname = "cbind"\n[container]\nmode = "bind-host"\n'


@pytest.mark.parametrize("extra,line,message", [
    ("[container.limits]\npids = 50\n", 5, "no pids limit"),
    ('[[container.network]]\ntype = "vlan"\nlink = "eth0"\nvlan_id = 5\n', 5,
     "cannot make a VLAN interface"),
    ('cap_drop = ["bpf"]\n', 4, "cannot drop the capability bpf"),
    ('devices = ["c 250:* rwm"]\n', 4, "has no fixed one"),
    ('[[container.network]]\ntype = "veth"\nlink = "br0"\nipv4 = ["10.0.0.2/24"]\n'
     'ipv4_gateway = "auto"\n', 8, "takes only an address"),
    ('[[container.mounts]]\nsource = "proc"\ntarget = "/p2"\ntype = "proc"\n', 7,
     "binds and tmpfs only"),
])
def test_what_libvirt_cannot_say_fails_with_one_line(tmp_path, capsys, extra, line, message):
    """A setting the container would silently run without is refused before anything is
    fetched or written, naming the recipe line."""
    code, out = build_cli(tmp_path, BIND + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[0].startswith(f"lxembed: error: {tmp_path / 'bad.toml'}:{line}: "), err
    assert message in err[0], err
    assert all(e.startswith("lxembed: hint: ") for e in err[1:]), err
    assert not out.exists() or not any(out.iterdir())


def test_what_libvirt_can_do_without_is_a_warning(tmp_path):
    recipe = BIND + 'lxc_raw = ["lxc.console.size = 1"]\n[container.limits]\nnofile = 512\n'
    _, warnings = libvirt_domain(container_spec(plan_of(tmp_path, recipe)), "/r")
    where = str(tmp_path / "c.toml")
    assert f"{where}:6: libvirt's domain XML has no RLIMIT_NOFILE" in "\n".join(warnings)
    assert any(w.startswith(f"{where}:4: ") and "lxc_raw" in w for w in warnings), warnings


# -- container-bind under libvirtd --------------------------------------------------------------


def _libvirt_skip_reason():
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("libvirtd", "virsh", "virt-xml-validate", "xmllint", "unshare"):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install libvirt-daemon libvirt-clients " \
                   f"libvirt-daemon-driver-lxc libxml2-utils)"
    if not LXC_DRIVER.exists():
        return f"{LXC_DRIVER} is missing (apt-get install libvirt-daemon-driver-lxc)"
    return None


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["virsh", "-q", "-c", URI, *args], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    if check and out.returncode != 0:
        pytest.fail(f"virsh {' '.join(args)}: {out.returncode}\n{out.stdout}{out.stderr}")
    return out



def libvirtd_running() -> bool:
    """A live libvirtd anywhere on the machine (a zombie not yet reaped does not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, state = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2]
        if comm == "libvirtd" and state != "Z":
            return True
    return False


def _cgroup_dirs(name: str) -> list:
    return sorted(str(p) for p in Path("/sys/fs/cgroup").glob(f"*/machine/*{name}.libvirt-lxc"))


@contextlib.contextmanager
def started_libvirtd(tmp_path: Path, netns: Optional[str] = None):
    """libvirtd with only the LXC driver, in its own mount namespace without the cgroup v2 mount
    of this hybrid layout (libvirt cannot start a domain with it), and in network namespace
    `netns` when given. Stopped at the end, and what it made that was not there before is
    removed."""
    reason = _libvirt_skip_reason()
    if reason:
        pytest.skip(reason)
    if libvirtd_running():
        pytest.skip("a libvirtd is already running here")
    drivers = Path(tempfile.mkdtemp(prefix="lxembed-libvirt-drivers-"))
    (drivers / LXC_DRIVER.name).symlink_to(LXC_DRIVER)
    existed = {p: Path(p).exists() for p in ("/run/libvirt", "/var/log/libvirt")}
    existed.update({str(p): True for p in Path("/sys/fs/cgroup").glob("*/machine")})
    Path("/var/log/libvirt").mkdir(parents=True, exist_ok=True)  # libvirtd exits without it
    unified = "/sys/fs/cgroup/unified"
    script = (f"if mountpoint -q {unified}; then umount {unified}; fi; "
              f"LIBVIRT_DRIVER_DIR={drivers} exec libvirtd")
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
    if netns:  # nsenter, not `ip netns exec`: that remounts /sys and hides the cgroups
        argv = ["nsenter", f"--net=/run/netns/{netns}"] + argv
    log = open(tmp_path / "libvirtd.log", "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        up = wait_for(lambda: virsh("version", check=False).returncode == 0, 15, 0.1)
        assert up, (tmp_path / "libvirtd.log").read_text()
        yield proc
    finally:
        for name in virsh("list", "--all", "--name", check=False).stdout.split():
            if name in TEST_DOMAINS:
                virsh("destroy", name, check=False)
                virsh("undefine", name, check=False)
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(drivers, ignore_errors=True)
        for path in sorted(Path("/sys/fs/cgroup").glob("*/machine")):
            if str(path) not in existed:
                try:
                    path.rmdir()  # libvirt's parent cgroup, made for this test
                except OSError:
                    pass
        for path in ("/run/libvirt", "/var/log/libvirt"):
            if not existed[path]:
                shutil.rmtree(path, ignore_errors=True)
        for name in TEST_DOMAINS:  # libvirt leaves its empty per-domain /dev directories
            for leftover in Path("/run/libvirt/lxc").glob(f"{name}.*"):
                shutil.rmtree(leftover, ignore_errors=True)


@pytest.fixture
def libvirtd(tmp_path):
    with started_libvirtd(tmp_path) as proc:
        yield proc


def _init_pid(name: str) -> Optional[int]:
    """The container's PID 1 as the host sees it: the child of libvirt's controller (None while
    there is none, as when the domain restarts)."""
    try:
        controller = Path(f"/run/libvirt/lxc/{name}.pid").read_text().strip()
        children = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


@pytest.mark.slow
@pytest.mark.lxc
def test_container_bind_under_libvirt(libvirtd, tmp_path):
    out = tmp_path / "out"
    build_image(load_plan("qemu-x86_64", "container-bind"), out, ["libvirt"])
    domain = out / "libvirt" / "domain.xml"
    validate_file(domain)
    dom = ET.fromstring(domain.read_text())
    name = dom.findtext("name")
    rootfs = mount_at(dom, "/").find("source").get("dir")
    assert rootfs == str((out / "libvirt" / "rootfs").resolve())  # the final path, not the stage
    virsh("define", str(domain))
    # libvirt keeps what the runner reads: the stop signal in lxembed's metadata.
    assert 'stop-signal="SIGTERM"' in virsh("dumpxml", name).stdout
    start = time.monotonic()
    virsh("start", name)
    started = time.monotonic() - start
    pid = _init_pid(name)
    assert pid is not None
    ready = Path(f"/proc/{pid}/root/run/lxembed/ready")
    assert wait_for(ready.exists, 15), virsh("dominfo", name).stdout
    ready_s = time.monotonic() - start
    # Inside: the host's python as PID 1, with its service's output, the hostname the recipe
    # sets and libvirt's environment telling the init it is in a container.
    inside = virsh("lxc-enter-namespace", name, "--noseclabel", "/bin/sh", "-c",
                   "cat /run/lxembed/log/hello.log; hostname; cat /proc/1/cmdline | tr '\\0' ' '")
    assert "hello from container-bind" in inside.stdout
    assert "container-bind\n" in inside.stdout and "/usr/bin/python3" in inside.stdout
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"container=lxc-libvirt" in environ
    assert b"PATH=/usr/sbin:/usr/bin:/sbin:/bin" in environ
    # Plain `virsh shutdown` tries initctl, succeeds (exit 0), and signals nothing.
    virsh("shutdown", name)
    time.sleep(1.5)
    assert virsh("domstate", name).stdout.strip() == "running" and Path(f"/proc/{pid}").exists()
    # The stop the domain's init expects: SIGTERM from `virsh shutdown --mode signal`.
    start = time.monotonic()
    virsh("shutdown", name, "--mode", "signal")
    assert wait_for(lambda: virsh("domstate", name).stdout.strip() == "shut off", 10), \
        virsh("domstate", name, "--reason").stdout
    stopped_s = time.monotonic() - start
    assert "shut off (shutdown)" in virsh("domstate", name, "--reason").stdout  # not destroyed
    assert stopped_s < 5.0
    assert not Path(f"/proc/{pid}").exists()
    virsh("undefine", name)
    assert name not in virsh("list", "--all", "--name").stdout.split()
    assert not Path(f"/etc/libvirt/lxc/{name}.xml").exists()
    assert not _cgroup_dirs(name)
    assert str(rootfs) not in Path("/proc/self/mountinfo").read_text()
    print(f"libvirt: started in {started:.2f} s, ready {ready_s:.2f} s, stopped in "
          f"{stopped_s:.2f} s")
    libvirtd.terminate()
    libvirtd.wait(15)
    assert not libvirtd_running()


@pytest.mark.slow
@pytest.mark.lxc
def test_lxembed_run_libvirt_stops_on_ctrl_c(libvirtd, tmp_path):
    args = [sys.executable, "-m", "lxembed", "run", "-b", "qemu-x86_64", "-r", "container-bind",
            "-o", str(tmp_path / "out"), "--runtime", "libvirt"]
    output = tmp_path / "output"
    with open(output, "wb") as fh:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        # The console is followed: the init's own lines come through libvirt's pty.
        assert wait_for(lambda: "lxembed-init: ready" in output.read_text(), 60, 0.05), \
            output.read_text()
        start = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert proc.wait(10) == 0, output.read_text()
        assert time.monotonic() - start < 2.0
        text = output.read_text()
        assert "SIGTERM: poweroff" in text and "container stopped" in text, text
        # A transient domain: nothing is left defined.
        assert "container-bind" not in virsh("list", "--all", "--name").stdout.split()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


NETNS = "lxembed-lv-test"
NET_RECIPE = """hostname = "lv-net"
[container]
name = "lxembed-lv-net"
mode = "bind-host"
devices = ["c 10:200 rwm"]
[container.limits]
memory = "64M"
[[container.network]]
type = "veth"
link = "br-lv"
veth_pair = "vlv0"
ipv4 = ["10.99.0.2/24"]
ipv4_gateway = "10.99.0.1"
[[container.network]]
type = "veth"
veth_pair = "vlv1"
name = "uplink"
"""


@pytest.fixture
def netns():
    """A network namespace with a bridge br-lv (10.99.0.1/24): the test's whole network."""
    from pyroute2 import NetNS
    from pyroute2 import netns as namespaces

    namespaces.create(NETNS)
    try:
        with NetNS(NETNS) as ns:
            ns.link("add", ifname="br-lv", kind="bridge")
            index = ns.link_lookup(ifname="br-lv")[0]
            ns.addr("add", index=index, address="10.99.0.1", prefixlen=24)
            ns.link("set", index=index, state="up")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        yield NETNS
    finally:
        namespaces.remove(NETNS)  # takes the bridge and any veth with it


@pytest.mark.slow
@pytest.mark.lxc
def test_interfaces_under_libvirt(netns, tmp_path):
    """A bridged veth with its address, route, MAC and host-side name, and an unbridged one
    (type='ethernet') with its own names, as libvirt makes them from lxembed's XML; with a
    memory limit, a device and the default capability drops."""
    from pyroute2 import NetNS

    (tmp_path / "b.toml").write_text(HOST_BOARD)
    (tmp_path / "net.toml").write_text(NET_RECIPE)
    plan = Plan(load_board(str(tmp_path / "b.toml")), load_recipe(str(tmp_path / "net.toml")),
                EPOCH)
    out = tmp_path / "out"
    build_image(plan, out, ["libvirt"])
    with started_libvirtd(tmp_path, netns):
        name = "lxembed-lv-net"
        virsh("define", str(out / "libvirt" / "domain.xml"))
        virsh("start", name)
        ready = Path(f"/proc/{_init_pid(name)}/root/run/lxembed/ready")
        assert wait_for(ready.exists, 15)
        with NetNS(netns) as ns:
            host = {link.get_attr("IFLA_IFNAME"): link for link in ns.get_links()}
            assert {"vlv0", "vlv1"} <= set(host), sorted(host)
            bridge = ns.link_lookup(ifname="br-lv")[0]
            assert host["vlv0"].get_attr("IFLA_MASTER") == bridge
            assert host["vlv1"].get_attr("IFLA_MASTER") is None
        ping = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "ping", "-c", "1", "-W",
                               "2", "10.99.0.2"], capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        inside = virsh("lxc-enter-namespace", name, "--noseclabel", "/bin/sh", "-c",
                       "cat /sys/class/net/eth0/address /sys/class/net/uplink/address; "
                       "ip route show default || cat /proc/net/route").stdout
        assert stable_mac(name, "eth0") in inside and stable_mac(name, "uplink") in inside
        assert "10.99.0.1" in inside or "0100630A" in inside  # the default route's gateway
        # The limit, the device and the dropped capabilities, as the kernel has them.
        (cgroup,) = Path("/sys/fs/cgroup/memory/machine").glob(f"*{name}.libvirt-lxc")
        assert (cgroup / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        tun = virsh("lxc-enter-namespace", name, "--noseclabel", "/bin/sh", "-c",
                    "stat -c %t:%T /dev/net/tun; grep CapBnd /proc/1/status").stdout.split()
        assert tun[0] == "a:c8"  # 10:200 in hex
        bounding = int(tun[-1], 16)
        assert not bounding & (1 << 16) and not bounding & (1 << 27)  # sys_module, mknod
        assert bounding & (1 << 21) and bounding & (1 << 22)  # sys_admin, sys_boot kept
        virsh("shutdown", name, "--mode", "signal")
        assert wait_for(lambda: virsh("domstate", name).stdout.strip() == "shut off", 10)
        virsh("undefine", name)


@pytest.mark.slow
@pytest.mark.lxc
def test_busybox_init_stops_on_its_own_signal(libvirtd, tmp_path):
    """busybox init reboots on the SIGTERM of `virsh shutdown --mode signal`, and libvirt starts
    a rebooted container again; the domain's stop signal (SIGUSR1, halt) ends it."""
    out = tmp_path / "out"
    build_image(load_plan("qemu-x86_64", "container-busybox"), out, ["libvirt"])
    domain = out / "libvirt" / "domain.xml"
    validate_file(domain)
    name = "container-busybox"
    virsh("create", str(domain))  # transient: gone when it stops
    try:
        first = _init_pid(name)
        assert first is not None
        virsh("shutdown", name, "--mode", "signal")
        assert wait_for(lambda: not Path(f"/proc/{first}").exists(), 10)  # it rebooted...
        assert wait_for(lambda: virsh("domstate", name, check=False).stdout.strip() == "running"
                        and _init_pid(name) not in (None, first), 10)  # ...and runs again
        start = time.monotonic()
        virsh("send-process-signal", name, "1", "SIGUSR1")
        assert wait_for(lambda: virsh("domstate", name, check=False).returncode != 0, 10)
        print(f"busybox init under libvirt: stopped in {time.monotonic() - start:.2f} s")
    finally:
        virsh("destroy", name, check=False)


PORTS = """name = "ctnet"
[[bridge]]
name = "cbr0"
addresses = ["10.85.0.1/24"]
[[port]]
name = "c-ct"
created_by = "lxc"
hwaddr = "02:00:00:85:01:02"
bridge = "cbr0"
peer_hwaddr = "02:00:00:85:00:02"
addresses = ["10.85.0.2/24"]
inbound_tcp = [8080]
[[port]]
name = "c-ph"
bridge = "cbr0"
peer = "c-php"
peer_hwaddr = "02:00:00:85:00:04"
addresses = ["10.85.0.4/24"]
"""


def test_ports_of_a_network_description(tmp_path, capsys):
    """A port `lxembed net up` makes is handed over (its rules are the host's already); a port
    LXC makes needs LXC's start-host hook for its rules, which libvirt has no place for."""
    need_validator()
    (tmp_path / "ctnet.toml").write_text(PORTS)
    recipe = BIND + '[[container.network]]\nport = "c-ph"\ndescription = "ctnet.toml"\n'
    text, _ = libvirt_domain(container_spec(plan_of(tmp_path, recipe)), "/r")
    validate(text, tmp_path)
    host = ET.fromstring(text).find("devices/hostdev[@type='net']")
    assert host.findtext("source/interface") == "c-php"
    assert host.find("ip").get("address") == "10.85.0.4"
    assert host.find("route").get("gateway") == "10.85.0.1"  # the bridge, from the description
    code, out = build_cli(tmp_path, BIND + '[[container.network]]\nport = "c-ct"\n'
                          'description = "ctnet.toml"\n')
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[0].startswith(f"lxembed: error: {tmp_path / 'bad.toml'}:5: "), err
    assert "port c-ct is made by LXC" in err[0] and "without its rules" in err[0]
    assert not out.exists() or not any(out.iterdir())
