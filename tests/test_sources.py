"""The apt source: offline warm builds, clear errors offline, a failing secondary index."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
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


# -- the download cache repairs itself -------------------------------------------------------------
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(data[:len(data) // 2])
    else:  # one bit, same size: apt's own check (the size) would take it for whole
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))


def _cached(cache: Path, pattern: str) -> Path:
    (path,) = (cache / "apt/bookworm-armhf/cache/archives").glob(pattern)
    return path


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_damaged_cached_deb_is_downloaded_again(warm_cache, tmp_path, how):
    cache = tmp_path / "cache"
    shutil.copytree(warm_cache, cache, symlinks=True)
    deb = _cached(cache, "busybox-static_*.deb")
    whole = _sha256(deb)  # as apt downloaded and verified it
    _damage(deb, how)
    result = _lxembed(cache, "-q", "build", "-b", "qemu-armhf", "-r", "busybox", "-o",
                      str(tmp_path / "out"))  # -q: warnings on one line each
    assert result.returncode == 0, result.stderr
    assert "was damaged in the download cache" in result.stderr, result.stderr
    assert _sha256(deb) == whole
    assert (tmp_path / "out/rootfs.cpio.zst").stat().st_size > 500_000


def test_damaged_cached_deb_offline_names_it(warm_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(warm_cache, cache, symlinks=True)
    deb = _cached(cache, "busybox-static_*.deb")
    _damage(deb, "truncate")
    result = _lxembed(cache, "build", "-b", "qemu-armhf", "-r", "busybox", "-o",
                      str(tmp_path / "out"), offline=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("lxembed: error: ")]
    assert len(errors) == 1 and f"{deb}: damaged in the download cache" in errors[0], errors
    assert not (tmp_path / "out").exists()


def test_damaged_cached_kernel_package_is_repaired(warm_cache, tmp_path):
    """The kernel package is read when the kernel is unpacked: damaged, it is fetched again."""
    cache = tmp_path / "cache"
    shutil.copytree(warm_cache / "apt", cache / "apt", symlinks=True)  # the kernel not unpacked
    kernel = _cached(cache, "linux-image-*.deb")
    whole = _sha256(kernel)
    _damage(kernel, "truncate")
    offline = _lxembed(cache, "build", "-b", "qemu-armhf", "-r", "busybox", "-o",
                       str(tmp_path / "out"), offline=True)
    assert offline.returncode == 2 and "Traceback" not in offline.stderr, offline.stderr
    assert f"{kernel}: damaged in the download cache" in offline.stderr, offline.stderr
    online = _lxembed(cache, "build", "-b", "qemu-armhf", "-r", "busybox", "-o",
                      str(tmp_path / "out"))
    assert online.returncode == 0, online.stderr
    assert _sha256(kernel) == whole
    assert (tmp_path / "out/modules.cpio.zst").exists()


# -- an apt proxy for a fleet of runners ----------------------------------------------------------
class _ForwardingProxy(http.server.ThreadingHTTPServer):
    """A plain HTTP forward proxy (what apt-cacher-ng is to apt) that records each request."""

    def __init__(self):
        self.seen = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # apt asks a proxy for the absolute URL
                proxy.seen.append(self.path)
                try:
                    with urllib.request.urlopen(self.path, timeout=60) as upstream:
                        body, status = upstream.read(), upstream.status
                        headers = [(k, v) for k, v in upstream.getheaders()
                                   if k.lower() in ("content-type", "last-modified")]
                except urllib.error.HTTPError as err:
                    body, status, headers = b"", err.code, []
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_apt_goes_through_the_proxy_it_is_given(tmp_path):
    from lxembed.sources.mirror import find_mirrors

    if not find_mirrors("bookworm").main.startswith("http://"):
        pytest.skip("the host's mirror is not plain http (a proxy sees no https request)")
    proxy = _ForwardingProxy()
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        (tmp_path / "board.toml").write_text('arch = "armel"\n')
        (tmp_path / "r.toml").write_text('packages = ["busybox-static"]\n')
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        result = _lxembed(tmp_path / "cache", "build", "-b", str(tmp_path / "board.toml"), "-r",
                          str(tmp_path / "r.toml"), "-o", str(tmp_path / "out"), "-f", "tar",
                          LXEMBED_APT_PROXY=url)
    finally:
        proxy.shutdown()
    assert result.returncode == 0, result.stderr
    assert any("/dists/bookworm/" in p for p in proxy.seen), proxy.seen
    assert any(p.endswith("_armel.deb") and "busybox-static" in p for p in proxy.seen), \
        proxy.seen
