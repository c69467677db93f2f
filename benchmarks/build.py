#!/usr/bin/env python3
"""Build-speed benchmark: lxembed's warm-cache busybox build against mmdebstrap.

Prints, side by side: median warm-cache build time of the `busybox` recipe (cpio.zst) for two
boards, mmdebstrap --variant=custom installing the same package into a tarball, the ratio, and
the image sizes. Installs mmdebstrap from Debian when it is missing (needs root).

mmdebstrap's custom variant installs with dpkg inside the chroot, so it also needs dpkg and a
shell there (the busybox example of mmdebstrap(1) is used); the boards are amd64 and i386,
which run natively here.
mmdebstrap keeps no package cache between runs: its time includes apt update and downloads,
the way it is used. Goal: lxembed under 1 s warm, at most 1/5 of mmdebstrap's time.

Then container-busybox's `--format oci-archive` against buildah building the same tree from a
Dockerfile (FROM scratch + ADD) and pushing it to an oci-archive. `build.py oci` runs only that.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lxembed.sources.mirror import find_mirrors  # noqa: E402

BOARDS = (("qemu-x86_64", "amd64"), ("qemu-i386", "i386"))
RUNS = 5
# mmdebstrap(1)'s own example of a busybox chroot with --variant=custom (busybox-static here).
MM_PACKAGES = "dpkg,busybox-static,libc-bin,base-files,base-passwd,debianutils"
MM_HOOKS = [
    '--setup-hook=mkdir -p "$1/bin"',
    '--setup-hook=for p in awk cat chmod chown cp diff echo env grep less ln mkdir mount rm rmdir '
    'sed sh sleep sort touch uname mktemp; do ln -s busybox "$1/bin/$p"; done',
    '--setup-hook=echo root:x:0:0:root:/root:/bin/sh > "$1/etc/passwd"',
    '--setup-hook=printf "root:x:0:\\nmail:x:8:\\nutmp:x:43:\\n" > "$1/etc/group"',
]


def timed(cmd, **kw) -> float:
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    return time.monotonic() - start


def ensure_mmdebstrap() -> None:
    if shutil.which("mmdebstrap") and shutil.which("arch-test"):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "mmdebstrap",
                    "arch-test"],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def oci_archive_against_buildah() -> None:
    """container-busybox as an OCI archive: lxembed's whole warm build (tree included) against
    buildah making an image of the very same tree (our layer, uncompressed) from a Dockerfile
    FROM scratch + ADD, with the same Cmd, Env and StopSignal, pushed to an oci-archive."""
    if not shutil.which("buildah"):
        print("buildah is not installed (scripts/quickstart.sh): no OCI figure")
        return
    # buildah refuses a runroot path longer than 50 characters: a short one under /tmp.
    with tempfile.TemporaryDirectory(prefix="lxbb", dir="/tmp") as tmp:
        out = Path(tmp) / "o"
        lx = [sys.executable, "-m", "lxembed", "-q", "build", "-b", "qemu-x86_64", "-r",
              "container-busybox", "-o", str(out), "-f", "oci-archive"]
        timed(lx, cwd=ROOT)
        lx_times, digests = [], set()
        for _ in range(RUNS):
            lx_times.append(timed(lx, cwd=ROOT))
            digests.add(hashlib.sha256((out / "oci-archive.tar").read_bytes()).hexdigest())
        ctx = Path(tmp) / "ctx"
        ctx.mkdir()
        with tarfile.open(out / "oci-archive.tar") as tar:
            def blob(digest: str) -> bytes:
                return tar.extractfile("blobs/sha256/" + digest[7:]).read()

            index = json.loads(tar.extractfile("index.json").read())
            manifest = json.loads(blob(index["manifests"][0]["digest"]))
            config = json.loads(blob(manifest["config"]["digest"]))["config"]
            layer = gzip.decompress(blob(manifest["layers"][0]["digest"]))
        (ctx / "rootfs.tar").write_bytes(layer)
        env = "".join(f"ENV {k}={json.dumps(v)}\n"
                      for k, _, v in (e.partition("=") for e in config["Env"]))
        (ctx / "Dockerfile").write_text(
            f"FROM scratch\nADD rootfs.tar /\n{env}STOPSIGNAL {config['StopSignal']}\n"
            f"CMD {json.dumps(config['Cmd'])}\n")
        buildah = ["buildah", "--root", f"{tmp}/r", "--runroot", f"{tmp}/rr",
                   "--storage-driver", "vfs"]
        bb_times, bb_digests = [], set()
        for i in range(RUNS):
            archive = Path(tmp) / f"bb{i}.tar"
            start = time.monotonic()
            for cmd in (["build", "--isolation", "chroot", "-q", "-t", "localhost/bench:latest",
                         str(ctx)],
                        ["push", "-q", "localhost/bench:latest", f"oci-archive:{archive}:latest"]):
                subprocess.run(buildah + cmd, check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
            bb_times.append(time.monotonic() - start)
            bb_digests.add(hashlib.sha256(archive.read_bytes()).hexdigest())
            subprocess.run(buildah + ["rmi", "-a", "-f"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        lx_s, bb_s = statistics.median(lx_times), statistics.median(bb_times)
        print(f"{'oci-archive':14} {'lxembed warm':>13} {'buildah':>11} {'ratio':>7} "
              f"{'lxembed':>10} {'buildah':>10}")
        print(f"{'container-bb':14} {lx_s:12.3f}s {bb_s:10.3f}s {lx_s / bb_s:7.3f} "
              f"{(out / 'oci-archive.tar').stat().st_size / 1e6:9.3f}M "
              f"{archive.stat().st_size / 1e6:9.3f}M")
        print(f"byte-identical over {RUNS} builds: lxembed {len(digests) == 1}, "
              f"buildah {len(bb_digests) == 1} (lxembed's time includes making the tree; "
              f"buildah's starts from it)")


def main() -> int:
    if sys.argv[1:] == ["oci"]:
        oci_archive_against_buildah()
        return 0
    ensure_mmdebstrap()
    mirror = find_mirrors("bookworm").main
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for board, arch in BOARDS:
            out = Path(tmp) / board
            lx = [sys.executable, "-m", "lxembed", "-q", "build", "-b", board, "-r", "busybox",
                  "-o", str(out), "-f", "cpio.zst"]
            timed(lx, cwd=ROOT)  # warm the cache (downloads once)
            lx_times = [timed(lx, cwd=ROOT) for _ in range(RUNS)]
            tarball = Path(tmp) / f"{board}-mm.tar"
            mm = ["mmdebstrap", "--variant=custom", "--mode=root", f"--architectures={arch}",
                  f"--include={MM_PACKAGES}", *MM_HOOKS, "bookworm", str(tarball), mirror]
            mm_times = [timed(mm) for _ in range(3)]
            lx_s, mm_s = statistics.median(lx_times), statistics.median(mm_times)
            rows.append((board, lx_s, mm_s, (out / "rootfs.cpio.zst").stat().st_size,
                         tarball.stat().st_size))
    print(f"{'board':14} {'lxembed warm':>13} {'mmdebstrap':>11} {'ratio':>7} "
          f"{'cpio.zst':>10} {'mm tar':>10}")
    for board, lx_s, mm_s, size, mm_size in rows:
        print(f"{board:14} {lx_s:12.3f}s {mm_s:10.3f}s {lx_s / mm_s:7.3f} "
              f"{size / 1e6:9.3f}M {mm_size / 1e6:9.3f}M")
    print(f"goals: lxembed < 1 s warm, ratio <= 0.2, cpio.zst < 1.0 MB (median of {RUNS} runs)")
    oci_archive_against_buildah()
    return 0


if __name__ == "__main__":
    sys.exit(main())
