"""The gateway device under qemu-system: LXC, nft and the network modules on the device itself;
its network (br0, the containers' ports with their names, MACs and filters) made at boot from
the recipe's one description; its service containers (bind-host, resolved against the device's
own tree) started in order, each once the previous is ready — web gets its lease from dhcp —
and stopped cleanly in reverse order at `poweroff`.

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
from lxembed.runners import Check, load_checks

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

POWEROFF_TIMEOUT = 30.0  # two containers to stop, scaled for TCG by the runner


@dataclass
class Boot(GuestSession):
    out: object = None
    checks: List[Check] = field(default_factory=list)


def boot_gateway(out, board: str, recipe: str = "gateway",
                 settled: str = "[service-containers] all containers ready") -> Boot:
    """Boot once, wait until the containers have settled, run every check of the recipe, then
    `poweroff` (through the init: the containers stop first)."""
    plan = load_plan(board, recipe)
    checks = load_checks(plan, "system")
    session = boot_session(plan, out, [(c.name, c.command) for c in checks], settled,
                           end_timeout=POWEROFF_TIMEOUT)
    return Boot(**vars(session), out=out, checks=checks)


@pytest.fixture(scope="module", params=["qemu-arm64", "qemu-mipsel"])
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
            "rogue-dhcp-in-web-gives-no-lease"} <= names


def test_poweroff_stops_the_containers_cleanly_in_reverse_order(gw):
    text = gw.shutdown
    assert gw.exit_status is not None, f"{gw.error}\n{text}"
    order = ["lxembed-init: SIGUSR2: poweroff", "stopping containers", "vl: stopped cleanly",
             "mv: stopped cleanly", "web: stopped cleanly", "dhcp: stopped cleanly",
             "lxembed-init: poweroff\n", "reboot: Power down"]
    at = [text.find(s) for s in order]
    assert -1 not in at and at == sorted(at), text
    assert "killed after" not in text and "SIGKILL" not in text, text
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


def test_boot_to_all_containers_ready_is_on_the_console(gw):
    log = (gw.out / "console.log").read_text(errors="replace")
    assert re.search(r"\[service-containers\] dhcp: ready.*\[service-containers\] web: ready",
                     log, re.S), log[-3000:]


def test_a_container_that_fails_is_retried_without_blocking_the_others(tmp_path):
    # The gateway with a container between web and mv whose start fails (a tmpfs LXC cannot
    # mount): it is reported and retried with backoff; mv and vl still start after it.
    recipes = load_plan("qemu-arm64", "gateway").recipe.path.parent
    (tmp_path / "broken.toml").write_text(
        'description = "fails to start"\nhostname = "broken"\n[container]\nmode = "bind-host"\n'
        'init = "python"\napparmor = "unconfined"\n[[container.mounts]]\ntype = "tmpfs"\n'
        'source = "tmpfs"\ntarget = "/data"\noptions = ["size=bogus"]\n')
    text = (recipes / "gateway.toml").read_text().replace(
        'recipe = "gateway/', f'recipe = "{recipes}/gateway/').replace(
        '[[service_containers]]\nname = "mv"',
        f'[[service_containers]]\nname = "broken"\nrecipe = "{tmp_path}/broken.toml"\n'
        'ready_timeout = 5.0\n\n[[service_containers]]\nname = "mv"')
    (tmp_path / "gw.toml").write_text(text)
    boot = boot_gateway(tmp_path / "out", "qemu-arm64", str(tmp_path / "gw.toml"),
                        "[service-containers] vl: ready")
    log = (tmp_path / "out" / "console.log").read_text(errors="replace")
    order = ["web: ready", "broken: failed to start; retrying in 1s", "mv: ready", "vl: ready"]
    at = [log.find(s) for s in order]
    assert -1 not in at and at == sorted(at), log[-4000:]
    assert "broken: failed to start; retrying in 8s" in log  # the backoff doubles
    assert "[service-containers] all containers ready" not in log
    assert boot.results["web-page-over-br0"][0] == 0, boot.error
    assert "mv: stopped cleanly" in boot.shutdown and boot.exit_status == 0, boot.shutdown
