"""Container configs without running anything: the spec's checks, LXC (modern and legacy), OCI,
the bind-host rootfs, and bad input refused with one file:line error and no output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lxembed.config import Plan
from lxembed.config.loader import load_board, load_recipe
from lxembed.containers import container_spec
from lxembed.containers.lxc_config import (
    MODERN_ONLY,
    legacy_entries,
    lxc_config,
    lxc_entries,
    parse_lxc_config,
)
from lxembed.containers.network import check_mac, stable_mac
from lxembed.containers.oci import oci_config
from lxembed.containers.rootfs import bind_host_tree, host_layout
from lxembed.errors import UserError
from lxembed.tree import RootfsTree
from lxembed.writers.directory import write_dir

EPOCH = 1704067200
# A board with no [qemu] table: no kernel, so no modules are downloaded.
HOST_BOARD = 'arch = "amd64"\nsuite = "bookworm"\n'
ARM_BOARD = 'arch = "arm64"\nsuite = "bookworm"\n'


def make_plan(tmp_path: Path, recipe: str, board: str = HOST_BOARD, name: str = "c") -> Plan:
    (tmp_path / "b.toml").write_text(board)
    (tmp_path / f"{name}.toml").write_text(recipe)
    return Plan(
        load_board(str(tmp_path / "b.toml")), load_recipe(str(tmp_path / f"{name}.toml")), EPOCH
    )


BIND = """hostname = "cbind"
[container]
mode = "bind-host"
init = "python"
"""

FULL = """hostname = "full"
packages = ["busybox-static"]
init = "busybox"
[container]
mode = "self-contained"
devices = ["c 10:200 rwm"]
idmap = ["u 0 100000 65536", "g 0 100000 65536"]
apparmor = "unconfined"
[container.limits]
memory = "64M"
pids = 100
nofile = 1024
[container.start]
auto = true
delay = 5
order = 10
[[container.network]]
type = "veth"
link = "br0"
veth_pair = "vfull0"
ipv4 = ["10.0.3.2/24"]
ipv4_gateway = "10.0.3.1"
ipv6 = ["fd00::2/64"]
mtu = 1400
[[container.network]]
type = "macvlan"
link = "eth9"
macvlan_mode = "bridge"
[[container.network]]
type = "vlan"
link = "eth9"
vlan_id = 42
"""


def test_stable_mac_is_local_unicast_and_stable():
    a = stable_mac("web", "eth0")
    assert a == stable_mac("web", "eth0") != stable_mac("web", "eth1")
    first = int(a[:2], 16)
    assert first & 0x02 and not first & 0x01
    assert check_mac(a) is None
    assert "multicast" in check_mac("01:00:5e:00:00:01")
    assert check_mac("02:00:00:00:00") is not None


def test_full_spec_lxc_modern(tmp_path):
    spec = container_spec(make_plan(tmp_path, FULL))
    entries = lxc_entries(spec, "/x/rootfs")
    keys = [k for k, _ in entries]
    d = dict(entries)
    assert d["lxc.uts.name"] == "full" and d["lxc.rootfs.path"] == "dir:/x/rootfs"
    assert d["lxc.rootfs.managed"] == "0" and d["lxc.autodev"] == "1"
    assert d["lxc.init.cmd"] == "/sbin/init" and d["lxc.signal.halt"] == "SIGPWR"
    assert d["lxc.signal.reboot"] == "SIGTERM"  # busybox init: SIGTERM reboots
    assert d["lxc.cgroup.memory.limit_in_bytes"] == d["lxc.cgroup2.memory.max"] == str(64 << 20)
    assert d["lxc.cgroup.pids.max"] == d["lxc.cgroup2.pids.max"] == "100"
    assert d["lxc.start.auto"] == "1" and d["lxc.start.order"] == "10"
    assert keys.count("lxc.idmap") == 2 and d["lxc.apparmor.profile"] == "unconfined"
    for v in ("cgroup", "cgroup2"):
        allow = [val for k, val in entries if k == f"lxc.{v}.devices.allow"]
        assert ("c 136:* rwm" in allow) and ("c 10:200 rwm" in allow) and len(allow) == 9
        assert keys.index(f"lxc.{v}.devices.deny") < keys.index(f"lxc.{v}.devices.allow")
    assert d["lxc.net.0.veth.pair"] == "vfull0" and d["lxc.net.0.ipv4.address"] == "10.0.3.2/24"
    assert d["lxc.net.0.hwaddr"] == stable_mac("c", "eth0")
    assert d["lxc.net.1.macvlan.mode"] == "bridge" and d["lxc.net.1.name"] == "eth1"
    assert d["lxc.net.2.vlan.id"] == "42"


def test_legacy_keys(tmp_path):
    spec = container_spec(make_plan(tmp_path, FULL))
    spec.lxc_version = (2, 0)
    text = lxc_config(spec, "/x/rootfs")
    entries = parse_lxc_config(text)
    keys = {k for k, _ in entries}
    assert {
        "lxc.utsname",
        "lxc.rootfs",
        "lxc.tty",
        "lxc.pts",
        "lxc.init_cmd",
        "lxc.haltsignal",
        "lxc.id_map",
        "lxc.aa_profile",
        "lxc.limit.nofile",
    } <= keys
    assert not any(k.startswith(MODERN_ONLY) or k.startswith("lxc.net.") for k in keys)
    assert [v for k, v in entries if k == "lxc.network.type"] == ["veth", "macvlan", "vlan"]
    assert ("lxc.network.ipv4", "10.0.3.2/24") in entries
    spec.lxc_version = (1, 0)
    assert "lxc.init_cmd" not in {k for k, _ in legacy_entries(spec, "/x")}


def normalise_converted(entries):
    """lxc-update-config's one known gap: it leaves lxc.limit.* alone (FACTS.md)."""
    return [(k.replace("lxc.limit.", "lxc.prlimit.", 1), v) for k, v in entries]


@pytest.mark.skipif(not shutil.which("lxc-update-config"), reason="lxc is not installed")
def test_legacy_converts_back_to_modern(tmp_path):
    spec = container_spec(make_plan(tmp_path, FULL))
    modern = [(k, v) for k, v in lxc_entries(spec, "/x/rootfs") if not k.startswith(MODERN_ONLY)]
    spec.lxc_version = (2, 0)
    path = tmp_path / "legacy.conf"
    path.write_text(lxc_config(spec, "/x/rootfs"))
    subprocess.run(
        ["lxc-update-config", "-c", str(path)], check=True, cwd=tmp_path, capture_output=True
    )
    assert normalise_converted(parse_lxc_config(path.read_text())) == modern


def test_oci_config(tmp_path):
    spec = container_spec(make_plan(tmp_path, BIND))
    doc = oci_config(spec)
    assert doc["process"]["args"][:3] == ["/usr/bin/python3", "-I", "-S"]
    assert "container=oci" in doc["process"]["env"] and doc["hostname"] == "cbind"
    devices = doc["linux"]["resources"]["devices"]
    assert devices[0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "major": 136, "access": "rwm"} in devices
    usr = [m for m in doc["mounts"] if m["destination"] == "/usr"][0]
    assert usr["type"] == "bind" and {"ro", "nosuid", "nodev"} <= set(usr["options"])
    assert {"type": "network"} in doc["linux"]["namespaces"]
    caps = doc["process"]["capabilities"]["bounding"]
    assert "CAP_SYS_BOOT" in caps and "CAP_SYS_MODULE" not in caps
    json.dumps(doc)


def test_bind_host_rootfs_is_tiny(tmp_path):
    plan = make_plan(tmp_path, BIND)
    spec = container_spec(plan)
    tree = RootfsTree()
    tree.write("/etc/hostname", b"cbind\n")
    tree.write("/usr/bin/busybox", b"x", origin="skeleton")
    out = bind_host_tree(tree, plan, spec)
    layout = host_layout()
    for link, target in layout.symlinks.items():
        assert out.get(link).target == target
    assert out.get("/usr/bin/busybox") is None and out.get("/usr").type == "dir"
    assert out.get("/.lxembed/lxinit.py.z") is not None
    write_dir(out, tmp_path / "rootfs")
    du = subprocess.run(["du", "-sk", str(tmp_path / "rootfs")], capture_output=True, text=True)
    assert int(du.stdout.split()[0]) < 100


def test_bind_host_refuses_files_under_usr(tmp_path):
    plan = make_plan(tmp_path, BIND + '\n[files]\n"/usr/local/bin/x" = "#!/bin/sh\\n"\n')
    spec = container_spec(plan)
    tree = RootfsTree()
    tree.write("/usr/local/bin/x", b"#!/bin/sh\n", origin="recipe files")
    with pytest.raises(UserError, match="hidden by the host's /usr"):
        bind_host_tree(tree, plan, spec)


BAD = [
    ('[container]\n[[container.network]]\ntype = "bridge"\n', 3, "is not one of"),
    ('[container]\n[[container.network]]\ntype = "vlan"\nlink = "eth0"\n', 3, "needs vlan_id"),
    (
        '[container]\n[[container.network]]\ntype = "veth"\nhwaddr = "01:00:5e:00:00:01"\n',
        4,
        "multicast",
    ),
    (
        '[container]\n[[container.network]]\ntype = "veth"\nipv4 = ["10.0.3.2"]\n',
        4,
        "no prefix length",
    ),
    ('[container]\nmode = "bind-host"\n', 2, "is arm64 and this host is"),
]


@pytest.mark.parametrize("recipe,line,message", BAD)
def test_bad_input_one_error_no_output(tmp_path, monkeypatch, capsys, recipe, line, message):
    import lxembed.containers
    from lxembed.cli import main

    monkeypatch.setattr(lxembed.containers, "foreign_binfmt_ok", lambda arch: False)
    board = ARM_BOARD if "bind-host" in recipe else HOST_BOARD
    (tmp_path / "b.toml").write_text(board)
    (tmp_path / "bad.toml").write_text('hostname = "bad"\n' + recipe)
    out = tmp_path / "out"
    code = main(
        [
            "-q",
            "build",
            "-b",
            str(tmp_path / "b.toml"),
            "-r",
            str(tmp_path / "bad.toml"),
            "-o",
            str(out),
            "-f",
            "lxc",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[0].startswith(f"lxembed: error: {tmp_path / 'bad.toml'}:{line + 1}: "), err
    assert message in err[0]
    assert not any("Traceback" in e for e in err)
    assert not out.exists() or not any(out.iterdir())


def test_bind_host_needs_no_packages(tmp_path):
    plan = make_plan(tmp_path, 'packages = ["busybox-static"]\n' + BIND)
    with pytest.raises(UserError, match="packages would be hidden"):
        container_spec(plan)


def test_real_recipes_resolve():
    from lxembed.config import load_plan

    for recipe in ("container-bind", "container-busybox"):
        spec = container_spec(load_plan("qemu-x86_64", recipe))
        assert spec.name == recipe
    assert container_spec(load_plan("qemu-x86_64", "container-bind")).init == "python"
    assert os.path.exists("/usr/bin/python3")


def test_idmap_shifts_rootfs_owners(tmp_path):
    from lxembed.containers.rootfs import container_tree

    plan = make_plan(tmp_path, BIND + 'idmap = ["u 0 100000 65536", "g 0 200000 65536"]\n')
    spec = container_spec(plan)
    tree = RootfsTree()
    tree.write("/etc/hostname", b"cbind\n", uid=0, gid=42)
    out = container_tree(tree, plan, spec)
    entry = out.get("/etc/hostname")
    assert (entry.uid, entry.gid) == (100000, 200042)
    assert tree.get("/etc/hostname").uid == 0  # the image's own tree is left alone
