"""The unpacked-package cache: the same tree cold, warm and off; damage repaired; an interrupted
unpack never used; bounded with LRU eviction; two builds at once; `lxembed cache`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_lxembed

from lxembed import log
from lxembed.errors import UserError
from lxembed.paths import cache_dir
from lxembed.sources import unpacked
from lxembed.sources.apt import Deb, PackageSource
from lxembed.tree import FILE, RootfsTree


@pytest.fixture(scope="module")
def real_debs():
    """Two real arm64 packages (from the download cache, or the archive once)."""
    debs = PackageSource("bookworm", "arm64").fetch(["busybox-static"])
    libc = [d for d in PackageSource("bookworm", "arm64").fetch(["libc6"]) if d.name == "libc6"]
    return {"busybox-static": debs[0], "libc6": libc[0]}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LXEMBED_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LXEMBED_UNPACKED_CACHE_MAX", raising=False)
    monkeypatch.setattr(unpacked, "_used", set())
    log.set_quiet(True)  # warnings as plain lines on stderr, for capsys
    yield tmp_path / "cache" / "unpacked"
    log.set_quiet(False)


def _copy(deb: Deb, where: Path) -> Deb:
    """The package at a path the test may remove, to show a warm build does not read it."""
    where.mkdir(exist_ok=True)
    shutil.copy(deb.path, where / deb.path.name)
    return Deb(deb.name, deb.version, deb.arch, where / deb.path.name, deb.sha256, deb.size)


def _tree(deb: Deb) -> RootfsTree:
    tree = RootfsTree()
    unpacked.add_package(deb, tree)
    return tree


def test_cold_warm_and_off_fill_the_same_tree(cache, real_debs, tmp_path, monkeypatch):
    deb = _copy(real_debs["libc6"], tmp_path / "debs")
    monkeypatch.setenv("LXEMBED_UNPACKED_CACHE_MAX", "0")
    off = _tree(deb)
    assert not cache.exists()
    monkeypatch.delenv("LXEMBED_UNPACKED_CACHE_MAX")
    cold = _tree(deb)
    entry = cache / deb.sha256
    assert sorted(p.name for p in entry.iterdir()) == ["data", "index", "stamp"]
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]
    deb.path.unlink()  # a warm build reads the cache only
    warm = _tree(deb)
    assert off.entries == cold.entries == warm.entries
    files = [e for e in warm.entries.values() if e.type == FILE]
    assert len(files) > 100 and sum(e.size for e in files) > 10_000_000
    assert all(os.stat(entry / n).st_mode & 0o222 == 0 for n in ("data", "index"))


def test_files_read_late_survive_a_clean_meanwhile(cache, real_debs, tmp_path):
    deb = real_debs["libc6"]
    reference = _tree(deb)  # cold: made the entry
    warm = _tree(deb)  # its files are read when first asked for
    assert unpacked.clean()[0] == 1 and not (cache / deb.sha256).exists()
    assert warm.entries == reference.entries  # read now, from the removed entry's open file
    assert sum(e.size for e in warm.entries.values()) == sum(
        len(e.data) for e in reference.entries.values() if e.type == FILE) + sum(
        e.size for e in reference.entries.values() if e.type != FILE)


def _flip_a_byte(entry: Path) -> None:
    data = entry / "data"
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    os.chmod(data, 0o644)
    data.write_bytes(bytes(blob))


DAMAGE = {
    "flipped byte in data": _flip_a_byte,
    "cut data": lambda e: os.truncate(e / "data", 1000),
    "garbage index": lambda e: (os.chmod(e / "index", 0o644), (e / "index").write_text("{")),
    "cut index": lambda e: os.truncate(e / "index", 500),
    "no index": lambda e: (e / "index").unlink(),
    "empty directory": lambda e: [p.unlink() for p in e.iterdir()],
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_entry_is_made_again(cache, real_debs, damage, capsys):
    deb = real_debs["busybox-static"]
    reference = _tree(deb)
    DAMAGE[damage](cache / deb.sha256)
    capsys.readouterr()
    assert _tree(deb).entries == reference.entries
    assert f"{deb.path.name}: its unpacked cache entry was damaged" in capsys.readouterr().err
    assert _tree(deb).entries == reference.entries  # and it is whole again: no warning
    assert capsys.readouterr().err == ""
    assert not [p for p in cache.iterdir() if p.name.startswith((".tmp-", ".trash-"))]


def test_a_failed_unpack_leaves_no_entry(cache, real_debs):
    deb = real_debs["busybox-static"]
    tree = RootfsTree()
    tree.write("/bin/busybox/x", b"a directory where the package has a file")
    with pytest.raises(UserError, match="is a directory with content"):
        unpacked.add_package(deb, tree)
    assert not cache.exists() or not list(cache.iterdir())
    assert (cache / deb.sha256).exists() is False
    _tree(deb)
    assert (cache / deb.sha256 / "stamp").exists()


_UNPACK = """
import hashlib, sys
from pathlib import Path
from lxembed.sources.apt import Deb
from lxembed.sources.unpacked import add_package
from lxembed.tree import RootfsTree
name, path, sha256 = sys.argv[1:4]
tree = RootfsTree()
add_package(Deb(name, "", "", Path(path), sha256), tree)
h = hashlib.sha256()
for path, e in sorted(tree.entries.items()):
    h.update(repr((path, e.type, e.mode, e.uid, e.gid, e.mtime, e.data, e.target, e.major,
                   e.minor, e.origin)).encode())
print(h.hexdigest())
"""


def _unpack_in(env: dict, deb: Deb) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _UNPACK, deb.name, str(deb.path), deb.sha256],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT)


@pytest.mark.slow
def test_killed_unpack_is_never_used(cache, real_debs):
    deb = real_debs["libc6"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = _unpack_in(env, deb)
    time.sleep(0.4)  # inside the unpack of a 23 MB package, usually
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    entry = cache / deb.sha256
    assert not entry.exists() or (entry / "stamp").exists()  # nothing or a whole entry
    again = _unpack_in(env, deb)
    out, err = again.communicate()
    assert again.returncode == 0 and "damaged" not in err, err
    first = out
    out, _ = _unpack_in(env, deb).communicate()
    assert out == first and (entry / "stamp").exists()


def test_a_full_disk_costs_the_cache_not_the_build(cache, real_debs, tmp_path):
    deb = real_debs["libc6"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    expected, _ = _unpack_in(dict(env, LXEMBED_UNPACKED_CACHE_MAX="0"), deb).communicate()
    small = tmp_path / "small"  # a 1 MiB file system for a 23 MB package, in a mount namespace
    small.mkdir()
    script = (f"mount -t tmpfs -o size=1m none {small} && "
              f"LXEMBED_CACHE={small} exec {sys.executable} -c \"$0\" \"$@\"")
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                           _UNPACK, deb.name, str(deb.path), deb.sha256],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected  # every file of the package, all the same
    said = " ".join(proc.stderr.split())  # the console wraps long lines
    assert "not kept in the unpacked cache (No space left on device)" in said, said


@pytest.mark.slow
def test_two_processes_unpack_the_same_package_at_once(cache, real_debs):
    deb = real_debs["libc6"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [_unpack_in(env, deb) for _ in range(2)]
    results = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert results[0][0] == results[1][0]
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".lock")] == [deb.sha256]
    assert "damaged" not in results[0][1] + results[1][1]


def test_least_recently_used_entries_are_evicted(cache, real_debs, monkeypatch):
    small, big = real_debs["busybox-static"], real_debs["libc6"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    assert _unpack_in(env, small).wait() == 0
    size = sum(p.stat().st_size for p in (cache / small.sha256).iterdir())
    env["LXEMBED_UNPACKED_CACHE_MAX"] = str(size + 100)  # room for one of the two only
    assert _unpack_in(env, big).wait() == 0  # the big one is in use: it stays, alone
    assert not (cache / small.sha256).exists() and (cache / big.sha256).exists()
    monkeypatch.setenv("LXEMBED_UNPACKED_CACHE_MAX", str(size + 100))
    _tree(big), _tree(small)  # both in use by this process: neither is evicted under it
    assert (cache / small.sha256).exists() and (cache / big.sha256).exists()


def test_cache_command_shows_and_cleans(cache, real_debs):
    _tree(real_debs["busybox-static"])
    env = dict(os.environ)
    shown = run_lxembed("cache", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "unpacked packages" in shown.stdout and " 1 entries" in shown.stdout, shown.stdout
    cleaned = run_lxembed("cache", "clean", env=env)
    assert cleaned.returncode == 0 and "removed 1 entries" in cleaned.stdout, cleaned.stdout
    assert not (cache / real_debs["busybox-static"].sha256).exists()
    assert " 0 entries" in run_lxembed("cache", env=env).stdout
    archives = cache.parent / "apt" / "bookworm-arm64" / "cache" / "archives"
    archives.mkdir(parents=True)
    shutil.copy(real_debs["busybox-static"].path, archives)
    assert " 1 files" in run_lxembed("cache", env=env).stdout
    cleaned = run_lxembed("cache", "clean", "--debs", env=env)
    assert "removed 1 .debs" in cleaned.stdout, cleaned.stdout + cleaned.stderr
    assert not list(archives.iterdir())
    bad = run_lxembed("cache", env=dict(env, LXEMBED_UNPACKED_CACHE_MAX="lots"))
    assert bad.returncode == 2
    assert bad.stderr.startswith("lxembed: error: LXEMBED_UNPACKED_CACHE_MAX: 'lots' is not")
    assert "Traceback" not in bad.stderr


# -- whole builds ------------------------------------------------------------------------------
def _build_cache(tmp_path: Path) -> Path:
    """A cache sharing this machine's downloads and kernels, with its own unpacked cache."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for child in cache_dir().iterdir():
        if child.name != "unpacked":
            (cache / child.name).symlink_to(child)
    return cache


def _build(cache: Path, out: Path, **env) -> subprocess.CompletedProcess:
    return run_lxembed("build", "-b", "qemu-arm64", "-r", "busybox-python", "-o", str(out),
                       "-f", "cpio.zst,tar", env=dict(os.environ, LXEMBED_CACHE=str(cache), **env))


def _contents(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_builds_are_byte_identical_cold_warm_and_off(tmp_path):
    cache = _build_cache(tmp_path)
    outs = {}
    for name, env in (("cold", {}), ("warm", {}), ("off", {"LXEMBED_UNPACKED_CACHE_MAX": "0"})):
        result = _build(cache, tmp_path / name, **env)
        assert result.returncode == 0, result.stderr
        outs[name] = _contents(tmp_path / name)
        if name == "cold":
            assert len(list((cache / "unpacked").iterdir())) > 30
    assert {"rootfs.cpio.zst", "rootfs.tar", "manifest.json"} <= set(outs["cold"])
    assert outs["cold"] == outs["warm"] == outs["off"]


@pytest.mark.slow
def test_damaged_entry_is_repaired_by_the_next_build(tmp_path):
    cache = _build_cache(tmp_path)
    assert _build(cache, tmp_path / "a").returncode == 0
    busybox = next(d for d in (cache / "apt/bookworm-arm64/cache/archives").glob("busybox_*.deb"))
    entries = [d for d in (cache / "unpacked").iterdir() if not d.name.startswith(".")
               and busybox.name.encode() in (d / "index").read_bytes()[:300]]
    assert len(entries) == 1
    _flip_a_byte(entries[0])
    result = _build(cache, tmp_path / "b")
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())  # the console wraps long lines
    assert f"{busybox.name}: its unpacked cache entry was damaged: unpacked again" in said, said
    assert _contents(tmp_path / "a") == _contents(tmp_path / "b")
    again = _build(cache, tmp_path / "b")
    assert again.returncode == 0 and "damaged" not in again.stderr, again.stderr
