"""The apt source: offline warm builds, clear errors offline, a failing secondary index."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def _lxembed(cache: Path, *args: str, offline: bool = False, **env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lxembed", *args]
    if offline:  # a network namespace with nothing in it: no route anywhere
        cmd = ["unshare", "--net", "--"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, LXEMBED_CACHE=str(cache), **env))


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    result = _lxembed(cache, "build", "-b", "qemu-armhf", "-r", "busybox", "-o",
                      str(cache / "out"))
    assert result.returncode == 0, result.stderr
    return cache


def test_warm_cache_builds_without_network(warm_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(warm_cache, cache, symlinks=True)
    result = _lxembed(cache, "build", "-b", "qemu-armhf", "-r", "busybox", "-o",
                      str(tmp_path / "out"), offline=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/rootfs.cpio.zst").stat().st_size > 500_000


def test_missing_package_offline_names_it(warm_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(warm_cache, cache, symlinks=True)
    for deb in (cache / "apt/bookworm-armhf/cache/archives").glob("busybox-static_*.deb"):
        deb.unlink()
    result = _lxembed(cache, "build", "-b", "qemu-armhf", "-r", "busybox", "-o",
                      str(tmp_path / "out"), offline=True)
    assert result.returncode != 0
    assert "cannot download busybox-static 1:1.35" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_cold_cache_offline_says_the_index_is_missing(tmp_path):
    result = _lxembed(tmp_path / "cache", "build", "-b", "qemu-armhf", "-r", "busybox", "-o",
                      str(tmp_path / "out"), offline=True)
    assert result.returncode != 0
    assert "cannot fetch the bookworm/armhf package index" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_failing_secondary_index_is_a_warning(tmp_path):
    result = _lxembed(tmp_path / "cache", "build", "-b", "qemu-mipsel", "-r", "busybox", "-o",
                      str(tmp_path / "out"), LXEMBED_SECURITY_MIRROR="file:/nonexistent/debian")
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and "nonexistent" in result.stderr, result.stderr
    assert (tmp_path / "out/rootfs.cpio.zst").exists()
