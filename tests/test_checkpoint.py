"""LXC's checkpoint/restore with Debian's CRIU, in a qemu-system x86_64 guest running the
board's Debian 6.1 kernel (bookworm's CRIU 3.17 does not know this host's newer kernel), booted
from an ext4 disk root: CRIU's restore pivot_roots, which the kernel refuses from an initramfs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


def test_a_counting_container_is_checkpointed_restored_and_counts_on(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lxembed", "test", "-b", "qemu-x86_64", "-r",
                           "checkpoint", "--root", "ext4", "--json", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout.strip().startswith("{"), proc.stderr[-3000:]
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["criu-check"]["ok"], checks["criu-check"]
    roundtrip = checks["criu-roundtrip"]
    assert roundtrip["ok"], roundtrip
    before = int(roundtrip["output"].split("before=")[1].split()[0])
    after = int(roundtrip["output"].split("after=")[1].split()[0])
    assert after >= before > 0, roundtrip["output"]
    assert proc.returncode == 0, proc.stderr[-2000:]
