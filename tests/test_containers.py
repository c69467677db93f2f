"""Container configs without running anything: the spec's checks, LXC (modern, and legacy per
version against each version's key table), OCI, the bind-host rootfs resolved against synthetic
roots (merged and split /usr), the init's config, and bad input refused with one file:line error
and no output."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import HOST_BOARD, build_cli

from lxembed.arch import get_arch
from lxembed.cli import main
from lxembed.config import Plan, load_plan
from lxembed.config.loader import load_board, load_recipe
from lxembed.config.toml_lines import key_line
from lxembed.containers import container_spec
from lxembed.containers.host_layout import host_layout, resolve_in
from lxembed.containers.lxc_config import lxc_config, lxc_entries, parse_lxc_config
from lxembed.containers.lxc_keys import TABLES, knows
from lxembed.containers.network import check_mac, stable_mac
from lxembed.containers.oci import oci_config
from lxembed.containers.rootfs import bind_host_tree, container_tree
from lxembed.errors import UserError
from lxembed.rootfs.python_init import init_config
from lxembed.tree import RootfsTree
from lxembed.writers.directory import write_dir

EPOCH = 1704067200
# A board with no [qemu] table: no kernel, so no modules are downloaded.
ARM_BOARD = 'arch = "arm64"\nsuite = "bookworm"\n'


def make_plan(tmp_path: Path, recipe: str, board: str = HOST_BOARD, name: str = "c") -> Plan:
    (tmp_path / "b.toml").write_text(board)
    (tmp_path / f"{name}.toml").write_text(recipe)
    return Plan(
        load_board(str(tmp_path / "b.toml")), load_recipe(str(tmp_path / f"{name}.toml")), EPOCH
    )



def assert_one_line_error(capsys, code, out, tmp_path, line, message):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert all(e.startswith("lxembed: hint: ") for e in err[1:]), err  # at most a hint after it
    assert err[0].startswith(f"lxembed: error: {tmp_path / 'bad.toml'}:{line}: "), err
    assert message in err[0], err
    assert not out.exists() or not any(out.iterdir())


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
    assert d["lxc.init.cmd"] == "/sbin/init"
    assert d["lxc.signal.reboot"] == "SIGTERM"  # busybox init: SIGTERM reboots
    assert d["lxc.cgroup.memory.limit_in_bytes"] == d["lxc.cgroup2.memory.max"] == str(64 << 20)
    assert d["lxc.cgroup.pids.max"] == d["lxc.cgroup2.pids.max"] == "100"
    assert d["lxc.prlimit.nofile"] == "1024"
    assert d["lxc.start.auto"] == "1" and d["lxc.start.order"] == "10"
    assert [v for k, v in entries if k == "lxc.idmap"] == ["u 0 100000 65536", "g 0 100000 65536"]
    for v in ("cgroup", "cgroup2"):
        allow = [val for k, val in entries if k == f"lxc.{v}.devices.allow"]
        assert "c 10:200 rwm" in allow and "c 136:* rwm" in allow  # the recipe's, and ptys
        assert keys.index(f"lxc.{v}.devices.deny") < keys.index(f"lxc.{v}.devices.allow")
    assert d["lxc.net.0.veth.pair"] == "vfull0" and d["lxc.net.0.ipv4.address"] == "10.0.3.2/24"
    assert d["lxc.net.0.hwaddr"] == stable_mac("c", "eth0")
    assert d["lxc.net.1.macvlan.mode"] == "bridge" and d["lxc.net.1.name"] == "eth1"
    assert d["lxc.net.2.vlan.id"] == "42" and d["lxc.net.2.link"] == "eth9"


# -- LXC versions: every key from that version's own table --------------------------------------

VERSIONS = sorted(TABLES)


def _liblxc():
    path = ctypes.util.find_library("lxc")
    if path is None:
        pytest.skip("liblxc is not installed (apt-get install lxc)")
    lib = ctypes.CDLL(path)
    lib.lxc_config_item_is_supported.restype = ctypes.c_bool
    lib.lxc_get_version.restype = ctypes.c_char_p
    return lib


def test_key_table_agrees_with_the_installed_liblxc():
    """The table for the installed LXC says what that LXC itself says, key by key: liblxc's
    exact lookup knows every top-level key of the table and none of the legacy ones."""
    lib = _liblxc()
    major, minor = map(int, lib.lxc_get_version().decode().split(".")[:2])
    table = TABLES[max(v for v in VERSIONS if v <= (major, minor))]
    # lxc.net.KEY live in a second table, reached through "lxc.net.<index>.", not exactly.
    top = [k for k in table if not k.startswith("lxc.net.")]
    assert [k for k in top if not lib.lxc_config_item_is_supported(k.encode())] == []
    legacy = TABLES[(2, 0)] - table
    assert "lxc.utsname" in legacy
    assert [k for k in legacy if lib.lxc_config_item_is_supported(k.encode())] == []


def test_key_history():
    """What LXC's confile.c says at each release, for the keys the issue names."""
    assert not knows((2, 0), "lxc.limit.nofile") and knows((2, 1), "lxc.limit.nofile")
    assert not knows((1, 1), "lxc.rebootsignal") and knows((2, 0), "lxc.rebootsignal")
    assert not knows((1, 0), "lxc.environment") and knows((1, 1), "lxc.environment")
    assert not knows((1, 0), "lxc.init_cmd") and knows((1, 1), "lxc.init_cmd")
    assert not knows((3, 0), "lxc.rootfs.managed") and knows((3, 1), "lxc.rootfs.managed")
    assert not knows((5, 0), "lxc.utsname") and knows((5, 0), "lxc.net.3.veth.pair")
    assert knows((1, 0), "lxc.cgroup.memory.limit_in_bytes")
    assert not knows((2, 1), "lxc.cgroup2.memory.max") and knows((3, 0), "lxc.cgroup2.pids.max")


# FULL without the two settings old LXC cannot say: every release can write it.
EXPRESSIBLE = FULL.replace("nofile = 1024\n", "")


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: "%d.%d" % v)
def test_every_written_key_is_in_the_versions_table(tmp_path, version):
    spec = container_spec(make_plan(tmp_path, EXPRESSIBLE))
    spec.lxc_version = version
    entries = parse_lxc_config(lxc_config(spec, "/x/rootfs"))
    assert [k for k, _ in entries if not knows(version, k)] == []
    values = [v for _, v in entries]
    # Nothing the recipe says is lost on the way: the settings, in that version's spelling.
    assert "full" in values and str(64 << 20) in values and "100" in values
    assert values.count("u 0 100000 65536") == 1 and "c 10:200 rwm" in values
    types = [v for k, v in entries if k.endswith(".type")]
    assert types == ["veth", "macvlan", "vlan"]
    assert ("/x/rootfs" in values) == (version < (3, 0))


@pytest.mark.parametrize("version", [v for v in VERSIONS if v >= (1, 1)], ids=lambda v: "%d.%d" % v)
def test_bind_host_python_init_for_each_version(tmp_path, version):
    spec = container_spec(make_plan(tmp_path, BIND + 'environment = { LANG = "C.UTF-8" }\n'))
    spec.lxc_version = version
    text = lxc_config(spec, "/x/rootfs")
    entries = parse_lxc_config(text)
    assert [k for k, _ in entries if not knows(version, k)] == []
    init = [v for k, v in entries if k in ("lxc.init_cmd", "lxc.init.cmd")]
    assert init == ["/usr/bin/python3 -I -S /.lxembed/lxinit --config /.lxembed/init.json"]
    assert ("LANG=C.UTF-8" in [v for _, v in entries])
    reboot = [k for k, _ in entries if k in ("lxc.rebootsignal", "lxc.signal.reboot")]
    # The Python init reboots on SIGINT, LXC's default: without the key (1.1) nothing changes,
    # and the header says what was left out.
    assert bool(reboot) == (version >= (2, 0))
    left_out = [line for line in text.splitlines() if line.startswith("# left out, unknown")]
    assert ("lxc.rebootsignal" in "".join(left_out)) == (version == (1, 1))


@pytest.mark.parametrize("recipe,version,key,message", [
    (FULL, "2.0", "nofile", "container.limits.nofile needs the LXC key lxc.limit.nofile"),
    (BIND + 'environment = { LANG = "C" }\n', "1.0", "environment",
     "needs the LXC key lxc.environment, which LXC 1.0 does not have"),
    (BIND, "1.0", "mode", "needs the LXC key lxc.init_cmd"),
    (BIND + 'lxc_raw = ["lxc.net.0.l2proxy = 1"]\n', "3.1", "lxc_raw", "lxc.net.0.l2proxy"),
    (BIND, "0.9", "lxc_version", "older than any LXC"),
])
def test_setting_the_version_cannot_say_is_refused(tmp_path, capsys, recipe, version, key,
                                                   message):
    recipe = recipe.replace("[container]\n", f'[container]\nlxc_version = "{version}"\n', 1)
    code, out = build_cli(tmp_path, recipe)
    table = "container.limits" if key == "nofile" else "container"
    line = key_line(recipe, table, key)
    assert line > 1
    assert_one_line_error(capsys, code, out, tmp_path, line, message)


def test_container_errors_come_before_any_download(tmp_path, capsys):
    """The spec is resolved (LXC version included) before packages are fetched: a package that
    does not exist is never asked for."""
    recipe = FULL.replace('"busybox-static"', '"lxembed-no-such-package"').replace(
        "[container]\n", '[container]\nlxc_version = "2.0"\n', 1)
    code, out = build_cli(tmp_path, recipe, fmt="tar,lxc")
    line = key_line(recipe, "container.limits", "nofile")
    assert_one_line_error(capsys, code, out, tmp_path, line, "lxc.limit.nofile")


def test_nofile_is_said_from_lxc_2_1(tmp_path):
    spec = container_spec(make_plan(tmp_path, FULL))
    spec.lxc_version = (2, 1)
    assert ("lxc.limit.nofile", "1024") in lxc_entries(spec, "/x")
    spec.lxc_version = (3, 2)
    assert ("lxc.prlimit.nofile", "1024") in lxc_entries(spec, "/x")


def normalise_converted(entries):
    """lxc-update-config's one known gap: it leaves lxc.limit.* alone (FACTS.md)."""
    return [(k.replace("lxc.limit.", "lxc.prlimit.", 1), v) for k, v in entries]


@pytest.mark.skipif(not shutil.which("lxc-update-config"), reason="lxc is not installed")
def test_legacy_converts_back_to_modern(tmp_path):
    spec = container_spec(make_plan(tmp_path, FULL))
    # What a 2.1 config cannot carry: lxembed's own keys that came in 3.x.
    modern = [(k, v) for k, v in lxc_entries(spec, "/x/rootfs")
              if k != "lxc.rootfs.managed" and not k.startswith("lxc.cgroup2.")]
    spec.lxc_version = (2, 1)
    path = tmp_path / "legacy.conf"
    path.write_text(lxc_config(spec, "/x/rootfs"))
    subprocess.run(
        ["lxc-update-config", "-c", str(path)], check=True, cwd=tmp_path, capture_output=True
    )
    assert normalise_converted(parse_lxc_config(path.read_text())) == modern


# -- OCI ---------------------------------------------------------------------------------------


def test_oci_config(tmp_path):
    spec = container_spec(make_plan(tmp_path, BIND))
    doc = oci_config(spec)
    assert doc["process"]["args"] == ["/usr/bin/python3", "-I", "-S", "/.lxembed/lxinit",
                                      "--config", "/.lxembed/init.json"]
    assert "container=oci" in doc["process"]["env"] and doc["hostname"] == "cbind"
    devices = doc["linux"]["resources"]["devices"]
    assert devices[0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "major": 136, "access": "rwm"} in devices
    usr = [m for m in doc["mounts"] if m["destination"] == "/usr"][0]
    assert usr["type"] == "bind" and {"ro", "nosuid", "nodev"} <= set(usr["options"])
    assert {"type": "network"} in doc["linux"]["namespaces"]
    caps = doc["process"]["capabilities"]["bounding"]
    assert "CAP_SYS_BOOT" in caps and "CAP_SYS_MODULE" not in caps


def _kernel_capability_names() -> set:
    """What procd's make_capabilities_h.sh makes of <linux/capability.h>: the names ujail knows."""
    header = Path("/usr/include/linux/capability.h")
    if not header.exists():
        pytest.skip("no kernel headers (linux-libc-dev)")
    names = set()
    for line in header.read_text().splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "#define" and words[1].startswith("CAP_") \
                and words[2].isdigit() and words[1] != "CAP_LAST_CAP":
            names.add(words[1])
    return names


def test_a_uxc_bundle_is_what_procds_ujail_accepts(tmp_path):
    # procd's jail/jail.c parseOCI: ociVersion must begin "1.0"; process, root and mounts are
    # required; jail/capabilities.c: an absent set is ALL capabilities, an unknown name fails.
    spec = container_spec(make_plan(tmp_path, BIND + 'oci_target = "uxc"\n'))
    doc = oci_config(spec)
    assert doc["ociVersion"].startswith("1.0")
    assert doc["process"] and doc["root"]["path"] and doc["mounts"]
    sets = doc["process"]["capabilities"]
    assert set(sets) == {"bounding", "effective", "permitted", "inheritable", "ambient"}
    assert sets["inheritable"] == [] and sets["ambient"] == []
    known = _kernel_capability_names()
    assert set(sets["bounding"]) <= known, set(sets["bounding"]) - known
    assert "CAP_SYS_MODULE" not in sets["bounding"]  # cap_drop holds for uxc as well


def test_uxc_is_one_of_two_targets(tmp_path):
    with pytest.raises(UserError, match=r"oci_target.*one of.*runtime.*uxc"):
        container_spec(make_plan(tmp_path, BIND + 'oci_target = "procd"\n'))


def test_apparmor_unconfined_is_no_oci_key(tmp_path):
    """crun refuses process.apparmorProfile on a host without AppArmor, even "unconfined"."""
    spec = container_spec(make_plan(tmp_path, BIND + 'apparmor = "unconfined"\n'))
    assert "apparmorProfile" not in oci_config(spec)["process"]
    assert ("lxc.apparmor.profile", "unconfined") in lxc_entries(spec, "/x")  # LXC takes it
    spec = container_spec(make_plan(tmp_path, BIND + 'apparmor = "lxembed-web"\n'))
    assert oci_config(spec)["process"]["apparmorProfile"] == "lxembed-web"


# -- bind-host against a root: the build host's, or a synthetic one ------------------------------


def merged_root(root: Path) -> Path:
    """A merged-/usr root, as Debian 12 lays it out."""
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "etc/alternatives"):
        (root / d).mkdir(parents=True)
    for name in ("bin", "sbin", "lib", "lib64"):
        (root / name).symlink_to(f"usr/{name}")
    (root / "usr/bin/python3.11").write_text("")
    (root / "usr/bin/python3").symlink_to("python3.11")
    return root


def split_root(root: Path) -> Path:
    """A root with real /bin, /lib, /sbin (busybox-era devices), busybox only in /bin."""
    for d in ("usr/bin", "usr/lib", "bin", "sbin", "lib", "opt/py/bin"):
        (root / d).mkdir(parents=True)
    (root / "bin/busybox").write_text("")
    # An absolute link, read inside the root: on the build host it would point at nothing.
    (root / "opt/py/bin/python3").write_text("")
    (root / "usr/bin/python3").symlink_to("/opt/py/bin/python3")
    return root


def test_resolve_in_stays_inside_the_root(tmp_path):
    root = split_root(tmp_path / "root")
    assert resolve_in(root, "/usr/bin/python3") == root / "opt/py/bin/python3"
    assert resolve_in(root, "/usr/bin/../../bin/busybox") == root / "bin/busybox"
    (root / "usr/bin/loop").symlink_to("loop")
    assert resolve_in(root, "/usr/bin/loop") is None
    assert resolve_in(root, "/etc/ld.so.cache") is None


def test_merged_root_layout(tmp_path):
    root = merged_root(tmp_path / "root")
    plan = make_plan(tmp_path, BIND)
    spec = container_spec(plan, root)
    assert spec.host_links == {"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib",
                               "/lib64": "usr/lib64"}
    binds = {m.target for m in spec.mounts if m.is_bind}
    assert binds == {"/usr", "/etc/alternatives"}  # no ld.so.cache in this root: skipped
    out = bind_host_tree(RootfsTree(), plan, spec)
    assert out.get("/bin").target == "usr/bin" and out.get("/usr").type == "dir"
    text = lxc_config(spec, "/x/rootfs")
    assert "lxc.mount.entry = /usr usr none ro,bind,nosuid,nodev,create=dir 0 0" in text
    assert " bin none" not in text  # LXC refuses a mount onto a symlinked /bin


def test_split_root_layout(tmp_path):
    root = split_root(tmp_path / "root")
    plan = make_plan(tmp_path, BIND.replace('"python"', '"busybox"'))
    spec = container_spec(plan, root)
    assert spec.host_links == {}
    assert [m.target for m in spec.mounts if m.is_bind] == ["/usr", "/bin", "/sbin", "/lib"]
    assert spec.init_cmd == ["/bin/busybox", "init"]  # found where this root has it
    out = bind_host_tree(RootfsTree(), plan, spec)
    for top in ("/bin", "/sbin", "/lib", "/usr"):
        assert out.get(top).type == "dir", top  # mount points, not links
    # The Python init is found through the root's own absolute link.
    assert container_spec(make_plan(tmp_path, BIND), root).init == "python"


def test_a_root_without_the_init_is_refused(tmp_path):
    root = merged_root(tmp_path / "root")
    with pytest.raises(UserError, match=f"busybox of {root}, which has none"):
        container_spec(make_plan(tmp_path, BIND.replace('"python"', '"busybox"')), root)
    (root / "usr/bin/python3").unlink()
    with pytest.raises(UserError, match="/usr/bin/python3 of .* which is missing"):
        container_spec(make_plan(tmp_path, BIND), root)


def test_root_without_usr_is_refused(tmp_path):
    (tmp_path / "root").mkdir()
    with pytest.raises(UserError, match="usr is not a directory"):
        host_layout(tmp_path / "root")


def test_bind_host_foreign_arch(tmp_path):
    root = merged_root(tmp_path / "root")
    plan = make_plan(tmp_path, BIND, board=ARM_BOARD)
    # The root's programs are amd64 and it has no binfmt_misc handler (no /proc at all).
    with pytest.raises(UserError) as err:
        container_spec(plan, root, root_arch=get_arch("amd64"))
    line = key_line(BIND, "container", "mode")
    assert str(err.value).startswith(f"{tmp_path / 'c.toml'}:{line}: ")
    assert "is arm64 and" in str(err.value)
    # A device's own tree: its programs are the board's own architecture.
    assert container_spec(plan, root, root_arch=get_arch("arm64")).mode == "bind-host"


def test_bind_host_rootfs_is_tiny(tmp_path):
    plan = make_plan(tmp_path, BIND + '[[services]]\nname = "s"\ncommand = ["/bin/true"]\n')
    spec = container_spec(plan)  # the build host's own root
    tree = RootfsTree()
    tree.write("/etc/hostname", b"cbind\n")
    tree.write("/usr/bin/busybox", b"x", origin="skeleton")
    out = bind_host_tree(tree, plan, spec)
    assert out.get("/usr/bin/busybox") is None and out.get("/usr").type == "dir"
    shim = out.read("/.lxembed/lxinit").decode()
    assert '"/.lxembed/lxinit.py.z"' in shim and "zlib.decompress" in shim
    config = json.loads(out.read("/.lxembed/init.json"))
    assert config["mode"] == "container" and config["services"][0]["name"] == "s"
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


# -- the init's config: one function for images and containers ---------------------------------

SERVICES = """
[[services]]
name = "web"
command = ["/usr/bin/web"]
type = "respawn"
after = ["db"]
environment = { PORT = "8080" }
[[services]]
name = "db"
command = ["db", "--serve"]
user = "root"
"""


def test_init_config_image_and_container(tmp_path):
    recipe = ('hostname = "box"\nmodules = ["vxlan"]\n[network]\ninterfaces = [{ name = "eth0", '
              'dhcp = true }, { name = "v7", vlan = 7, link = "eth0", ipv4 = ["10.7.0.2/24"] }]'
              + SERVICES + '[container]\nmode = "bind-host"\n')
    plan = make_plan(tmp_path, recipe)
    image = init_config(plan)
    container = init_config(plan, container_spec(plan))
    web = {"name": "web", "command": ["/usr/bin/web"], "type": "respawn", "after": ["db"],
           "environment": {"PORT": "8080"}, "workdir": "/", "stop_timeout": 5.0}
    # Services are the same for both; user = "root" is the init's own: left out.
    for config in (image, container):
        assert config["hostname"] == "box"
        assert config["services"][0] == web
        assert "user" not in config["services"][1]
    assert image["mode"] == "auto" and image["modules"] == ["vxlan"] and image["rescue_shell"]
    assert image["network"]["interfaces"] == [
        {"name": "eth0", "dhcp": True},
        {"name": "v7", "dhcp": False, "vlan": 7, "link": "eth0", "ipv4": ["10.7.0.2/24"]}]
    # A container's runtime makes its interfaces; its host's kernel has the modules.
    assert container["mode"] == "container"
    assert not {"network", "modules", "rescue_shell"} & set(container)


def test_self_contained_python_gets_the_container_config(tmp_path):
    plan = make_plan(tmp_path, 'init = "python"\n' + SERVICES + "[container]\n")
    spec = container_spec(plan)
    tree = RootfsTree()
    tree.write("/sbin/init", b"#!/usr/bin/python3.11 -IS\n", mode=0o755)
    tree.write("/etc/lxembed/init.json", json.dumps(init_config(plan)).encode())
    out = container_tree(tree, plan, spec)
    assert json.loads(out.read("/etc/lxembed/init.json"))["mode"] == "container"
    assert json.loads(tree.read("/etc/lxembed/init.json"))["mode"] == "auto"  # image unchanged


# -- bad input: one line, exit 2, nothing written ------------------------------------------------

BAD = [
    ('[container]\n[[container.network]]\ntype = "bridge"\n', 4, "is not one of"),
    ('[container]\n[[container.network]]\ntype = "vlan"\nlink = "eth0"\n', 4, "needs vlan_id"),
    ('[container]\n[[container.network]]\ntype = "vlan"\nvlan_id = 5\n', 4,
     "type 'vlan' needs link = the parent interface"),
    (
        '[container]\n[[container.network]]\ntype = "veth"\nhwaddr = "01:00:5e:00:00:01"\n',
        5,
        "multicast",
    ),
    (
        '[container]\n[[container.network]]\ntype = "veth"\nipv4 = ["10.0.3.2"]\n',
        5,
        "no prefix length",
    ),
    # A device VLAN: `ip link add link None ...` before; now refused where it is written.
    ('[network]\ninterfaces = [{ name = "v5", vlan = 5 }]\n[container]\n', 3,
     "vlan = 5 needs link = the parent interface"),
    ('[[network.interfaces]]\nname = "eth0"\ndhcp = true\n[[network.interfaces]]\n'
     'name = "v5"\nvlan = 5\n[container]\n', 7, "interface v5: vlan = 5 needs link"),
    ('[[network.interfaces]]\nname = "v9"\nlink = "eth0"\n[container]\n', 4,
     "link is the parent of a VLAN and needs vlan"),
]


@pytest.mark.parametrize("recipe,line,message", BAD)
def test_bad_input_one_error_no_output(tmp_path, capsys, recipe, line, message):
    code, out = build_cli(tmp_path, 'hostname = "bad"\n' + recipe)
    assert_one_line_error(capsys, code, out, tmp_path, line, message)


def test_device_vlan_from_a_base_recipe(tmp_path):
    """The check runs on the merged recipe and names the file that defines the interface."""
    (tmp_path / "base.toml").write_text(
        '[[network.interfaces]]\nname = "eth0"\ndhcp = true\n\n'
        '[[network.interfaces]]\nname = "v5"\nvlan = 5\n')
    base = f'base = "{tmp_path / "base.toml"}"\n'
    (tmp_path / "child.toml").write_text(base + 'hostname = "child"\n')
    with pytest.raises(UserError) as err:
        load_recipe(str(tmp_path / "child.toml"))
    assert str(err.value).startswith(f"{tmp_path / 'base.toml'}:7: interface v5: vlan = 5 ")
    # The child's own v5 replaces the base's (named items merge by name): now it is whole.
    (tmp_path / "child.toml").write_text(
        base + '[network]\ninterfaces = [{ name = "v5", vlan = 5, link = "eth0" }]\n')
    recipe = load_recipe(str(tmp_path / "child.toml"))
    v5 = [i for i in recipe.settings["network"]["interfaces"] if i["name"] == "v5"]
    assert v5[0]["link"] == "eth0"


def test_lxc_and_oci_stay_formats(tmp_path, capsys):
    from lxembed.pipeline import check_formats

    check_formats(["tar", "lxc", "oci", "libvirt"])
    known = r"lxc, oci, libvirt, oci-image, oci-archive, lxc-image"
    with pytest.raises(UserError, match=rf"unknown format lxd \(known: dir, .*{known}\)"):
        check_formats(["lxc", "lxd"])
    # Many cells at once check formats the same way.
    (tmp_path / "b.toml").write_text(HOST_BOARD)
    code = main(["-q", "build", "-b", f"{tmp_path / 'b.toml'},{tmp_path / 'b.toml'}", "-r",
                 "container-bind", "-f", "lxd"])
    assert code == 2 and "unknown format lxd" in capsys.readouterr().err


def test_bind_host_needs_no_packages(tmp_path):
    plan = make_plan(tmp_path, 'packages = ["busybox-static"]\n' + BIND)
    with pytest.raises(UserError, match="packages would be hidden"):
        container_spec(plan)


def test_real_recipes_resolve():
    bind = container_spec(load_plan("qemu-x86_64", "container-bind"))
    assert bind.name == "container-bind" and bind.init == "python"
    assert bind.init_cmd[3:] == ["/.lxembed/lxinit", "--config", "/.lxembed/init.json"]
    busybox = container_spec(load_plan("qemu-x86_64", "container-busybox"))
    assert busybox.mode == "self-contained" and busybox.init_cmd == ["/sbin/init"]


def test_idmap_shifts_rootfs_owners(tmp_path):
    plan = make_plan(tmp_path, BIND + 'idmap = ["u 0 100000 65536", "g 0 200000 65536"]\n')
    spec = container_spec(plan)
    tree = RootfsTree()
    tree.write("/etc/hostname", b"cbind\n", uid=0, gid=42)
    out = container_tree(tree, plan, spec)
    entry = out.get("/etc/hostname")
    assert (entry.uid, entry.gid) == (100000, 200042)
    assert tree.get("/etc/hostname").uid == 0  # the image's own tree is left alone
