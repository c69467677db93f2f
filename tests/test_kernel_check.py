"""lxembed kernel-check: a board kernel's container and network support, from its config file,
and builds refusing a recipe its board's kernel cannot run."""

from __future__ import annotations

import json
import re

import pytest
from conftest import make_deb, run_lxembed

from lxembed.config import list_boards, load_board
from lxembed.sources.kernel_config import CAPABILITIES

VENDOR = """# a vendor kernel, trimmed
CONFIG_NAMESPACES=y
CONFIG_UTS_NS=y
CONFIG_PID_NS=y
CONFIG_NET_NS=y
CONFIG_CGROUPS=y
CONFIG_BRIDGE=m
CONFIG_VETH=y
# CONFIG_VLAN_8021Q is not set
CONFIG_NF_TABLES=m
"""


@pytest.fixture
def vendor(tmp_path):
    (tmp_path / "vendor.config").write_text(VENDOR)
    (tmp_path / "router.toml").write_text('arch = "mipsel"\nkernel_config = "vendor.config"\n')
    make_deb(tmp_path / "data.deb", [("./opt/", "dir", None), ("./opt/a", "file", b"a\n")])
    return tmp_path


def test_vendor_config_report(vendor):
    result = run_lxembed("kernel-check", "--config", str(vendor / "vendor.config"), "--json",
                         check=True)
    rows = {r["capability"]: r for r in json.loads(result.stdout)["capabilities"]}
    assert rows["veth"]["state"] == "built in" and rows["veth"]["module"] is None
    assert rows["bridge"]["state"] == "module" and rows["bridge"]["module"] == "bridge"
    assert rows["802.1Q vlan"]["state"] == "missing"
    assert rows["802.1Q vlan"]["options"] == {"CONFIG_VLAN_8021Q": None}
    strict = run_lxembed("kernel-check", "--config", str(vendor / "vendor.config"), "--strict")
    assert strict.returncode == 1


def test_not_a_config_is_one_line(tmp_path):
    (tmp_path / "x").write_text("hello\n")
    result = run_lxembed("kernel-check", "--config", str(tmp_path / "x"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"lxembed: error: {tmp_path / 'x'}: not a kernel " \
                                    "configuration (no CONFIG_ lines)"


def test_board_without_a_kernel_says_how(tmp_path):
    result = run_lxembed("kernel-check", "-b", "mt7621-router")
    assert result.returncode == 2 and "--config FILE" in result.stderr


def test_vlan_on_a_kernel_without_8021q_fails_before_building(vendor):
    (vendor / "r.toml").write_text('debs = ["data.deb"]\n\n[network]\ninterfaces = [\n'
                                   '  { name = "eth0.20", vlan = 20, link = "eth0" }]\n')
    result = run_lxembed("build", "-b", str(vendor / "router.toml"), "-r", str(vendor / "r.toml"),
                         "-o", str(vendor / "out"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"lxembed: error: {vendor / 'r.toml'}:4: an interface sets "
                                    "vlan, but the board's kernel has no 802.1Q vlan")
    assert not (vendor / "out").exists()


def test_container_on_a_kernel_without_namespaces_fails(vendor):
    config = vendor / "vendor.config"
    config.write_text(VENDOR.replace("CONFIG_PID_NS=y", "# CONFIG_PID_NS is not set"))
    (vendor / "r.toml").write_text('debs = ["data.deb"]\n[container]\nmode = "bind-host"\n')
    result = run_lxembed("build", "-b", str(vendor / "router.toml"), "-r", str(vendor / "r.toml"),
                         "-o", str(vendor / "out"), "-f", "tar")
    assert result.returncode == 2, result.stderr
    assert "builds a container, but the board's kernel has no pid namespace" in result.stderr


def test_a_module_the_kernel_lacks_is_refused(vendor):
    (vendor / "r.toml").write_text('debs = ["data.deb"]\nmodules = ["8021q"]\n')
    result = run_lxembed("build", "-b", str(vendor / "router.toml"), "-r", str(vendor / "r.toml"),
                         "-o", str(vendor / "out"), "-f", "tar")
    assert result.returncode == 2
    assert f"{vendor / 'r.toml'}:2: kernel module 8021q: the board's kernel does not have it" \
        in result.stderr


QEMU_BOARDS = [b for b in list_boards() if load_board(b).qemu is not None]


@pytest.mark.slow
@pytest.mark.parametrize("board", QEMU_BOARDS)
def test_report_agrees_with_a_plain_reading_of_the_config(board):
    result = run_lxembed("kernel-check", "-b", board, "--json", check=True)
    doc = json.loads(result.stdout)
    text = open(doc["kernel_config"]).read()
    plain = dict(re.findall(r"^CONFIG_(\w+)=(\S+)$", text, re.M))
    rows = {r["capability"]: r for r in doc["capabilities"]}
    assert len(rows) == len(CAPABILITIES)
    for _, name, options, _ in CAPABILITIES:
        values = [plain.get(o) for o in options]
        want = ("missing" if any(v not in ("y", "m") for v in values)
                else "module" if "m" in values else "built in")
        assert rows[name]["state"] == want, (board, name, values)
        assert rows[name]["options"] == {f"CONFIG_{o}": plain.get(o) for o in options}
    # What the gateway relies on is there on every qemu board's Debian kernel.
    for name in ("network namespace", "veth", "bridge", "802.1Q vlan", "bridge family"):
        assert rows[name]["state"] != "missing", (board, name)
