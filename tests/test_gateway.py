"""The gateway device under qemu-system: LXC, nft and the network modules on the device itself;
its network (br0, the containers' ports with their names, MACs and filters) made at boot from
the recipe's one description; its service containers (bind-host, resolved against the device's
own tree) supervised by the device's init: independent ones started in parallel, web once dhcp
(its lease) is ready, a killed one started again, and all stopped cleanly in reverse
dependency order at `poweroff`.

One boot runs every check; the power-off at the end goes through the init.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import List

import pytest
from guest_session import GuestSession, boot_session

from lxembed.config import load_plan
from lxembed.reports.timeline import parse_events
from lxembed.runners import Check, load_checks

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

POWEROFF_TIMEOUT = 30.0  # two containers to stop, scaled for TCG by the runner
TIMELINE = "cat /run/lxembed/timeline"


@dataclass
class Boot(GuestSession):
    out: object = None
    checks: List[Check] = field(default_factory=list)

    def events(self) -> List[dict]:
        return parse_events(self.results.get("timeline", (None, ""))[1])

    def first(self, name: str, event: str) -> float:
        return next(e["t"] for e in self.events() if e["name"] == name and e["event"] == event)


def boot_gateway(out, board: str, recipe: str = "gateway",
                 settled: str = "lxembed-init: healthy") -> Boot:
    """Boot once, wait until the device says it is healthy, run every check of the recipe,
    read the init's timeline, then `poweroff` (through the init: the containers stop first)."""
    plan = load_plan(board, recipe)
    checks = load_checks(plan, "system")
    commands = [(c.name, c.command) for c in checks] + [("timeline", TIMELINE)]
    session = boot_session(plan, out, commands, settled, end_timeout=POWEROFF_TIMEOUT)
    return Boot(**vars(session), out=out, checks=checks)


# trixie: LXC 6.0 on the device, Python 3.13 for the init, merged /usr, kernel 6.12.
@pytest.fixture(scope="module", params=["qemu-arm64", "qemu-mipsel", "qemu-arm64-trixie"])
def gw(request, tmp_path_factory) -> Boot:
    return boot_gateway(tmp_path_factory.mktemp(f"gateway-{request.param}"), request.param)


def test_every_check_passes_on_the_device(gw):
    assert gw.results, gw.error
    failed = {c.name: gw.results.get(c.name) for c in gw.checks
              if c.name not in gw.results or not c.judge(*gw.results[c.name])}
    assert not failed, failed
    names = {c.name for c in gw.checks}
    assert {"modules-loaded", "lxc-tools", "nft-bridge-table", "device-container",
            "service-containers-ready", "host-side-ports", "web-lease-from-dhcp",
            "web-page-over-br0", "web-changed-mac-loses-connectivity",
            "mv-through-the-shim", "vl-through-br0.20-only", "device-network",
            "web-comes-back-after-kill-9", "rogue-dhcp-in-web-gives-no-lease"} <= names
    back = re.search(r"back in ([0-9.]+) s", gw.results["web-comes-back-after-kill-9"][1])
    print(f"{gw.out.name}: web serving again {back.group(1)} s after kill -9 (1 s backoff)")


def test_poweroff_stops_the_containers_cleanly_in_reverse_dependency_order(gw):
    text = gw.shutdown
    assert gw.exit_status is not None, f"{gw.error}\n{text}"
    start = text.find("lxembed-init: SIGUSR2: poweroff")
    stopped = {n: text.find(f"lxembed-init: {n}: stopped (exit status 0)")
               for n in ("dhcp", "web", "mv", "vl")}
    end = text.find("lxembed-init: poweroff\n")
    assert -1 < start < min(stopped.values()) and -1 not in stopped.values(), text
    assert stopped["web"] < stopped["dhcp"] < end < text.find("reboot: Power down"), text
    assert "SIGKILL" not in text and "respawning" not in text, text
    assert gw.exit_status == 0, text


def test_lxc_is_reduced_to_what_runs(gw):
    manifest = json.loads((gw.out / "manifest.json").read_text())
    entries = {e["path"]: e for e in manifest["entries"]}
    assert {"/usr/bin/lxc-start", "/usr/bin/lxc-attach", "/usr/sbin/nft"} <= set(entries)
    assert not [p for p in entries if p.startswith("/usr/share/lxc/templates")]
    assert not [p for p in entries if p.endswith("/perl") or "/perl5/" in p]
    # Where LXC looks by default, so lxc-ls, lxc-info -n and lxc-attach -n need no -P.
    assert {f"/var/lib/lxc/{n}/config" for n in ("dhcp", "web", "mv", "vl")} <= set(entries)
    # A bind-host rootfs of the device is mount points and a few small files.
    for name in ("dhcp", "web", "mv", "vl"):
        size = sum(e["size"] for p, e in entries.items()
                   if p.startswith(f"/var/lib/lxc/{name}/rootfs/"))
        assert size < 100_000, (name, size)


def test_nftables_softdep_brings_the_crc32c_provider(gw):
    # nf_tables needs libcrc32c, whose `softdep=pre: crc32c` names an alias: without its
    # provider (crc32c_generic) libcrc32c, nf_tables and every nft rule fail to load.
    manifest = json.loads((gw.out / "modules.manifest.json").read_text())
    names = {os.path.basename(e["path"]) for e in manifest["entries"]}
    assert {"libcrc32c.ko", "crc32c_generic.ko", "nf_tables.ko"} <= names


def test_containers_start_in_dependency_order_and_independent_ones_in_parallel(gw):
    log = (gw.out / "console.log").read_text(errors="replace")
    assert re.search(r"lxembed-init: dhcp: ready.*lxembed-init: web: ready.*"
                     r"lxembed-init: healthy", log, re.S), log[-3000:]
    network_done = gw.first("device-network", "exit")
    starts = {n: gw.first(n, "start") for n in ("dhcp", "web", "mv", "vl")}
    # After the device's network; dhcp, mv and vl at once (before any of them is ready)...
    assert min(starts.values()) >= network_done
    first_ready = min(gw.first(n, "ready") for n in ("dhcp", "mv", "vl"))
    assert max(starts["dhcp"], starts["mv"], starts["vl"]) < first_ready, gw.events()
    # ...web only once dhcp, which gives it its address, is ready.
    assert starts["web"] >= gw.first("dhcp", "ready")
    # The kill -9 check: web was started again and became ready again.
    assert [e["event"] for e in gw.events() if e["name"] == "web"][-3:] == [
        "exit", "restart", "ready"]


def test_a_container_that_fails_is_retried_without_blocking_the_others(tmp_path):
    # The gateway with a container whose start fails (a tmpfs LXC cannot mount) that mv names
    # in `after`: it is reported and retried with backoff; mv and vl still start; the device
    # boots (ready) but never says it is healthy, and --status names the culprit.
    recipes = load_plan("qemu-arm64", "gateway").recipe.path.parent
    (tmp_path / "broken.toml").write_text(
        'description = "fails to start"\nhostname = "broken"\n[container]\nmode = "bind-host"\n'
        'init = "python"\napparmor = "unconfined"\n[[container.mounts]]\ntype = "tmpfs"\n'
        'source = "tmpfs"\ntarget = "/data"\noptions = ["size=bogus"]\n')
    text = (recipes / "gateway.toml").read_text().replace(
        'recipe = "gateway/', f'recipe = "{recipes}/gateway/').replace(
        '[[service_containers]]\nname = "mv"',
        f'[[service_containers]]\nname = "broken"\nrecipe = "{tmp_path}/broken.toml"\n'
        'ready_timeout = 5.0\n\n[[service_containers]]\nname = "mv"\nafter = ["broken"]')
    (tmp_path / "gw.toml").write_text(text)
    plan = load_plan("qemu-arm64", str(tmp_path / "gw.toml"))
    commands = [("page", "timeout 5 wget -q -O - http://10.88.0.10/"),
                ("status", "sleep 8; /sbin/init --status; echo status=$?")]
    boot = boot_session(plan, tmp_path / "out", commands, None,
                        end_timeout=POWEROFF_TIMEOUT)
    log = (tmp_path / "out" / "console.log").read_text(errors="replace")
    assert "broken: container stopped (lxc-start: exit status 1), respawning in 1s" in log, \
        log[-4000:]
    assert "broken: container stopped (lxc-start: exit status 1), respawning in 4s" in log
    assert re.search(r"mv: ready.*lxembed-init: ready", log, re.S), log[-4000:]
    assert "lxembed-init: healthy" not in log
    assert "lxembed gateway" in boot.results["page"][1], boot.error
    status = boot.results["status"][1]
    assert re.search(r"^broken +(waiting|running) +- +restarts [1-9]", status, re.M), status
    assert "unhealthy: broken" in status and "status=1" in status, status
    assert "mv: stopped (exit status 0)" in boot.shutdown and boot.exit_status == 0, \
        boot.shutdown
