"""The gateway device (work in progress): LXC, nft and the network modules on the device itself,
booted under qemu-system, with a bind-host container of the device started, entered and stopped
on its console."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


@pytest.fixture(scope="module")
def arm64(tmp_path_factory):
    out = tmp_path_factory.mktemp("gateway-arm64")
    proc = subprocess.run([sys.executable, "-m", "lxembed", "test", "-b", "qemu-arm64", "-r",
                           "gateway", "--json", "-o", str(out)], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    assert proc.stdout.strip().startswith("{"), proc.stderr[-3000:]
    return out, proc.returncode, json.loads(proc.stdout)


def test_gateway_boots_and_every_check_passes(arm64):
    out, status, report = arm64
    failed = [(c["name"], c["output"][-500:], c["error"]) for c in report["checks"] if not c["ok"]]
    assert status == 0 and not failed, failed
    names = {c["name"] for c in report["checks"]}
    assert {"modules-loaded", "lxc-tools", "nft-bridge-table", "device-container"} <= names


def test_lxc_is_reduced_to_what_runs(arm64):
    out, _, _ = arm64
    manifest = json.loads((out / "manifest.json").read_text())
    paths = {e["path"] for e in manifest["entries"]}
    assert {"/usr/bin/lxc-start", "/usr/bin/lxc-attach", "/usr/sbin/nft"} <= paths
    assert not [p for p in paths if p.startswith("/usr/share/lxc/templates")]
    assert not [p for p in paths if p.endswith("/perl") or "/perl5/" in p]


def test_nftables_softdep_brings_the_crc32c_provider(arm64):
    # nf_tables needs libcrc32c, whose `softdep=pre: crc32c` names an alias: without its
    # provider (crc32c_generic) libcrc32c, nf_tables and every nft rule fail to load.
    out, _, _ = arm64
    manifest = json.loads((out / "modules.manifest.json").read_text())
    names = {os.path.basename(e["path"]) for e in manifest["entries"]}
    assert {"libcrc32c.ko", "crc32c_generic.ko", "nf_tables.ko"} <= names
