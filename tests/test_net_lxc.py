"""A real LXC container whose network names a port of a host network description: LXC makes the
veth (veth.pair, hwaddr, link from the port), the generated start-host hook gives its host side
the declared MAC and loads the port's rules, the post-stop hook removes them.

LXC runs inside the test's own host namespace (net_helpers): its veth, the bridge and the
rules never reach the machine's network. Containers live in a private lxcpath.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from net_helpers import host_namespace

from lxembed.config import Plan
from lxembed.config.loader import load_board, load_recipe
from lxembed.containers.lxc_config import parse_lxc_config
from lxembed.pipeline import build_image
from lxembed.runners.containers import remove_lock_dir

pytestmark = [pytest.mark.slow, pytest.mark.lxc]
READY = "lxembed-init: ready"

NET = """
name = "ctnet"

[[bridge]]
name = "cbr0"
addresses = ["10.85.0.1/24"]

[[port]]
name = "c-ct"                   # LXC makes this veth: lxc.net.0.veth.pair
created_by = "lxc"
hwaddr = "02:00:00:85:01:02"
bridge = "cbr0"
peer_hwaddr = "02:00:00:85:00:02"
addresses = ["10.85.0.2/24"]
inbound_tcp = [8080]

[[port]]
name = "c-ph"                   # `net up` makes this pair; the container takes c-php (phys)
bridge = "cbr0"
peer = "c-php"
peer_hwaddr = "02:00:00:85:00:04"
addresses = ["10.85.0.4/24"]

[[port]]
name = "c-ns"                   # a neighbour on the same bridge, in a namespace
bridge = "cbr0"
netns = "c-ns"
addresses = ["10.85.0.3/24"]
"""

RECIPE = """hostname = "netct"

[container]
mode = "bind-host"

[[container.network]]
port = "c-ct"
description = "ctnet.toml"
"""


@pytest.fixture
def host(tmp_path):
    if not shutil.which("lxc-start"):
        pytest.skip("lxc is not installed (apt-get install lxc)")
    with host_namespace(tmp_path) as h:
        yield h


def build(tmp_path: Path, name: str = "netct", recipe: str = RECIPE) -> Path:
    (tmp_path / "host.toml").write_text('arch = "amd64"\nsuite = "bookworm"\n')
    (tmp_path / "ctnet.toml").write_text(NET)
    (tmp_path / f"{name}.toml").write_text(recipe)
    plan = Plan(load_board(str(tmp_path / "host.toml")),
                load_recipe(str(tmp_path / f"{name}.toml")), 1704067200)
    out = tmp_path / f"out-{name}"
    build_image(plan, out, ["lxc"])
    return out


def start(host, lxc, config: Path, run: Path) -> None:
    console = run / f"{lxc[-1]}.console"
    host.run("lxc-start", *lxc, "-d", "-f", str(config), "-L", str(console),
             "-o", str(run / f"{lxc[-1]}.log"), "-l", "INFO")
    end = time.monotonic() + 15
    while READY not in (console.read_text(errors="replace") if console.exists() else ""):
        assert time.monotonic() < end, (run / f"{lxc[-1]}.log").read_text()[-2000:]
        time.sleep(0.05)


def test_config_takes_pair_mac_and_bridge_from_the_port(tmp_path):
    out = build(tmp_path)
    entries = parse_lxc_config((out / "lxc/config").read_text())
    config = dict(entries)
    assert config["lxc.net.0.type"] == "veth"
    assert config["lxc.net.0.veth.pair"] == "c-ct"
    assert config["lxc.net.0.hwaddr"] == "02:00:00:85:00:02"
    assert config["lxc.net.0.link"] == "cbr0"
    assert config["lxc.net.0.ipv4.address"] == "10.85.0.2/24"
    assert config["lxc.net.0.ipv4.gateway"] == "10.85.0.1"
    start = Path(config["lxc.hook.start-host"])
    assert start == out.resolve() / "lxc/hooks/net-c-ct-start-host.sh"
    assert os.access(start, os.X_OK) and "02:00:00:85:01:02" in start.read_text()
    assert Path(config["lxc.hook.post-stop"]).name == "net-c-ct-post-stop.sh"


def test_a_recipe_key_that_disagrees_with_the_port_is_refused(tmp_path):
    (tmp_path / "ctnet.toml").write_text(NET)
    (tmp_path / "netct.toml").write_text(RECIPE + 'link = "br9"\n')
    (tmp_path / "host.toml").write_text('arch = "amd64"\nsuite = "bookworm"\n')
    plan = Plan(load_board(str(tmp_path / "host.toml")),
                load_recipe(str(tmp_path / "netct.toml")), 1704067200)
    from lxembed.containers import container_spec
    from lxembed.errors import UserError
    with pytest.raises(UserError, match=r"netct.toml:9: .*link = 'br9' disagrees with port c-ct"):
        container_spec(plan)


def test_lxc_container_on_a_port_gets_the_declared_names_macs_and_rules(host, tmp_path):
    out = build(tmp_path)
    config = out / "lxc/config"
    run = tmp_path / "run"
    run.mkdir()
    host.lxembed("net", "up", str(tmp_path / "ctnet.toml"))
    lxc = ["-P", str(run), "-n", "netct"]
    try:
        start(host, lxc, config, run)
        info = json.loads(host.run("ip", "-j", "-d", "link", "show", "c-ct").stdout)[0]
        assert info["address"] == "02:00:00:85:01:02"  # set by the start-host hook
        assert info["master"] == "cbr0"
        inside = host.run("lxc-attach", *lxc, "--", "cat", "/sys/class/net/eth0/address")
        assert inside.stdout.strip() == "02:00:00:85:00:02"
        table = host.run("nft", "list", "table", "bridge", "lxembed_port_c_ct").stdout
        assert '"c-ct" : jump from_c_ct' in table
        assert host.ping("", "10.85.0.2") and host.ping("c-ns", "10.85.0.2")
        check = host.lxembed("net", "check", str(tmp_path / "ctnet.toml"), check=False)
        assert check.returncode == 0, check.stdout  # the running container's port as declared
        shown = json.loads(host.lxembed("net", "show", "--json",
                                        str(tmp_path / "ctnet.toml")).stdout)
        assert "bridge lxembed_port_c_ct" in shown["rules"]["tables"]
        # anti-spoofing holds for the container too: an undeclared source is dropped
        host.run("lxc-attach", *lxc, "--", "ip", "addr", "add", "10.85.0.99/24", "dev", "eth0")
        spoofed = host.run("lxc-attach", *lxc, "--", "ping", "-c", "1", "-W", "1", "-I",
                           "10.85.0.99", "10.85.0.3", check=False)
        assert spoofed.returncode != 0
        host.run("lxc-attach", *lxc, "--", "ping", "-c", "1", "-W", "1", "-I", "10.85.0.2",
                 "10.85.0.3")
        host.run("lxc-stop", *lxc, "--rcfile", str(config), "-t", "10")
        tables = host.run("nft", "list", "tables").stdout
        assert "lxembed_port_c_ct" not in tables  # the post-stop hook removed it
        assert "c-ct" not in host.run("ip", "-br", "link").stdout
    finally:
        host.run("lxc-stop", *lxc, "-k", check=False)
        remove_lock_dir(run)
    host.lxembed("net", "down", str(tmp_path / "ctnet.toml"))
    assert host.run("nft", "list", "tables").stdout == ""


def test_lxc_container_takes_a_port_net_up_made_as_phys(host, tmp_path):
    recipe = RECIPE.replace('"netct"', '"netph"').replace('"c-ct"', '"c-ph"')
    out = build(tmp_path, "netph", recipe)
    config = dict(parse_lxc_config((out / "lxc/config").read_text()))
    assert (config["lxc.net.0.type"], config["lxc.net.0.link"]) == ("phys", "c-php")
    assert "lxc.hook.start-host" not in config
    run = tmp_path / "run"
    run.mkdir()
    host.lxembed("net", "up", str(tmp_path / "ctnet.toml"))
    lxc = ["-P", str(run), "-n", "netph"]
    try:
        start(host, lxc, out / "lxc/config", run)
        assert "c-php" not in host.run("ip", "-br", "link").stdout  # in the container now
        inside = host.run("lxc-attach", *lxc, "--", "cat", "/sys/class/net/eth0/address")
        assert inside.stdout.strip() == "02:00:00:85:00:04"
        assert host.ping("c-ns", "10.85.0.4")  # through the bridge and c-ph's filter
        host.run("lxc-stop", *lxc, "--rcfile", str(out / "lxc/config"), "-t", "10")
        assert "c-php" in host.run("ip", "-br", "link").stdout  # back on the host
    finally:
        host.run("lxc-stop", *lxc, "-k", check=False)
        remove_lock_dir(run)
    host.lxembed("net", "down", str(tmp_path / "ctnet.toml"))
    assert host.run("nft", "list", "tables").stdout == ""
