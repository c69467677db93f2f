#!/usr/bin/env python3
"""Build-speed benchmark: warm lxembed builds with and without the unpacked-package cache,
against the same packages unpacked by hand, and mmdebstrap.

For busybox, busybox-python and gateway on qemu-arm64 (cpio.zst), median of RUNS, the runs of
every column alternating in one loop, wall and CPU (user + system) seconds (the machine is
shared: figures compare within one run of this script, not across runs; CPU time is the
steadier of the two when other work runs):
  warm       .debs and unpacked packages cached (the everyday rebuild)
  no cache   LXEMBED_UNPACKED_CACHE_MAX=0: every .deb's data.tar decompressed again (as before
             the cache)
  cold       .debs cached, the unpacked cache empty (the first build after a new package)
  by hand    `dpkg-deb -x` of exactly the .debs the build reads (taken from the cache it
             filled), then `find | sort | cpio -o -H newc | zstd`: the shell floor for unpacking
             them, with no picking, ELF closure, skeleton or checks
Then busybox and busybox-python warm on a bookworm and a trixie board (`build.py suites`: only
that), the CLI's start-up (`build.py startup`: only that; `python3 -c pass`, `lxembed --help`,
and a warm build's imports by -X importtime), and busybox on qemu-x86_64 against mmdebstrap
--variant=custom installing the same package into a tarball (mmdebstrap keeps no package
cache: its time includes apt update and the downloads, the way it is used; it needs dpkg and a
shell in the chroot, so amd64).

lxembed runs with its bytecode written (PYTHONPYCACHEPREFIX in a temporary directory), as an
installed copy does, and with its own unpacked cache; downloads and kernels come from the
machine's lxembed cache. Installs mmdebstrap when missing (needs root).
Goals: warm busybox-python < 0.4 s, gateway < 1.5 s, busybox no slower than without the
cache; cold no slower than without the cache; busybox < 1/5 of mmdebstrap; trixie as fast as
bookworm.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import resource
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

from lxembed.paths import cache_dir  # noqa: E402
from lxembed.sources.mirror import find_mirrors  # noqa: E402

BOARD = "qemu-arm64"
SUITE_BOARDS = ("qemu-arm64", "qemu-arm64-trixie")  # Debian 12 and 13, the same machine
RECIPES = ("busybox", "busybox-python", "gateway")
RUNS = 5
MM_RUNS = 3
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
    return timed_cpu(cmd, **kw)[0]


def timed_cpu(cmd, **kw) -> tuple:
    """Wall seconds, and the CPU seconds (user + system) of the command and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def ensure_mmdebstrap() -> None:
    if shutil.which("mmdebstrap") and shutil.which("arch-test"):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "mmdebstrap",
                    "arch-test"],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def bench_cache(tmp: Path) -> Path:
    """A cache sharing this machine's downloads and kernels, with its own unpacked cache."""
    cache = tmp / "cache"
    cache.mkdir()
    for child in cache_dir().iterdir():
        if child.name != "unpacked":
            (cache / child.name).symlink_to(child)
    return cache


def debs_read(cache: Path) -> list:
    """The .debs a build read: the packages its cold run put in the unpacked cache."""
    names = [json.loads((d / "index").read_bytes().partition(b"\n")[2])["package"]
             for d in (cache / "unpacked").iterdir() if not d.name.startswith(".")]
    archives = cache / "apt" / "bookworm-arm64" / "cache" / "archives"
    return sorted(archives / n for n in names)


def by_hand(debs: list, tmp: Path) -> tuple:
    work = tmp / "hand"
    shutil.rmtree(work, ignore_errors=True)
    (work / "root").mkdir(parents=True)
    script = "".join(f"dpkg-deb -x {d} {work}/root && " for d in debs) + (
        f"cd {work}/root && find . | LC_ALL=C sort | cpio -o -H newc --quiet | "
        f"zstd -q -f -o {work}/rootfs.cpio.zst")
    return timed_cpu(["sh", "-c", script])


def lxembed_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return dict(env, LXEMBED_CACHE=str(bench_cache(tmp)), PYTHONPYCACHEPREFIX=str(tmp / "pyc"))


def lxembed_rows(tmp: Path, env: dict) -> list:
    cache = Path(env["LXEMBED_CACHE"])
    off = dict(env, LXEMBED_UNPACKED_CACHE_MAX="0")
    rows = []
    for recipe in RECIPES:
        out = tmp / recipe
        lx = [sys.executable, "-m", "lxembed", "-q", "build", "-b", BOARD, "-r", recipe,
              "-o", str(out), "-f", "cpio.zst"]
        timed(lx, cwd=ROOT, env=env)  # downloads (once), bytecode, the zstd output cache
        debs = debs_read(cache)
        times = {"warm": [], "no cache": [], "cold": [], "by hand": []}
        for _ in range(RUNS):
            times["warm"].append(timed_cpu(lx, cwd=ROOT, env=env))
            times["no cache"].append(timed_cpu(lx, cwd=ROOT, env=off))
            shutil.rmtree(cache / "unpacked")
            times["cold"].append(timed_cpu(lx, cwd=ROOT, env=env))
            times["by hand"].append(by_hand(debs, tmp))
        medians = {k: tuple(statistics.median(x[i] for x in v) for i in (0, 1))
                   for k, v in times.items()}
        rows.append((recipe, len(debs), medians, (out / "rootfs.cpio.zst").stat().st_size))
        shutil.rmtree(cache / "unpacked")  # the next recipe's cold run starts empty
    return rows


def suite_rows(tmp: Path, env: dict) -> list:
    """Warm busybox and busybox-python builds of the same recipe for a bookworm and a trixie
    board (SUITE_BOARDS), alternating in one loop: (recipe, board, wall, CPU, cpio.zst bytes)."""
    rows = []
    for recipe in ("busybox", "busybox-python"):
        cmds = {}
        for board in SUITE_BOARDS:
            out = tmp / f"suite-{board}-{recipe}"
            cmds[board] = [sys.executable, "-m", "lxembed", "-q", "build", "-b", board, "-r",
                           recipe, "-o", str(out), "-f", "cpio.zst"]
            timed(cmds[board], cwd=ROOT, env=env)  # downloads, unpacked cache, bytecode
        times = {board: [] for board in SUITE_BOARDS}
        for _ in range(RUNS):
            for board in SUITE_BOARDS:
                times[board].append(timed_cpu(cmds[board], cwd=ROOT, env=env))
        for board in SUITE_BOARDS:
            size = (tmp / f"suite-{board}-{recipe}" / "rootfs.cpio.zst").stat().st_size
            rows.append((recipe, board, statistics.median(t[0] for t in times[board]),
                         statistics.median(t[1] for t in times[board]), size))
    return rows


def print_suite_rows(rows: list) -> None:
    print(f"warm builds by suite, cpio.zst, median of {RUNS} (goal: trixie as fast as bookworm)")
    print(f"{'recipe':16} {'board':18} {'wall':>7} {'CPU':>7} {'cpio.zst':>10}")
    for recipe, board, wall, cpu, size in rows:
        print(f"{recipe:16} {board:18} {wall:6.2f}s {cpu:6.2f}s {size / 1e6:9.2f}M")
    print()


def startup_rows(tmp: Path, env: dict) -> list:
    """(what, median wall s) of the CLI's start: the interpreter alone, `lxembed --help`, and
    the imports of a warm busybox-python build (-X importtime, its top-level imports summed:
    what the build costs before it does anything)."""
    py = sys.executable
    build = [py, "-X", "importtime", "-m", "lxembed", "-q", "build", "-b", BOARD,
             "-r", "busybox-python", "-o", str(tmp / "startup"), "-f", "cpio.zst"]
    subprocess.run(build, check=True, env=env, capture_output=True)  # warm, bytecode written
    floor, helps, imports = [], [], []
    for _ in range(RUNS):
        floor.append(timed([py, "-c", "pass"], env=env))
        helps.append(timed([py, "-m", "lxembed", "--help"], env=env))
        err = subprocess.run(build, check=True, env=env, capture_output=True, text=True).stderr
        fields = [line.split("|") for line in err.splitlines() if line.startswith("import time:")]
        imports.append(sum(int(f[1]) for f in fields if f[1].strip().isdigit()
                           and f[2].startswith(" ") and not f[2].startswith("  ")) / 1e6)
    return [("python3 -c pass", statistics.median(floor)),
            ("lxembed --help", statistics.median(helps)),
            ("a warm build's imports", statistics.median(imports))]


def print_startup_rows(rows: list) -> None:
    print(f"CLI start-up, median of {RUNS}: " + ", ".join(f"{w} {s:.3f}s" for w, s in rows))
    print()


def mmdebstrap_row(tmp: Path, env: dict) -> tuple:
    ensure_mmdebstrap()
    out = tmp / "x86_64"
    lx = [sys.executable, "-m", "lxembed", "-q", "build", "-b", "qemu-x86_64", "-r", "busybox",
          "-o", str(out), "-f", "cpio.zst"]
    timed(lx, cwd=ROOT, env=env)
    lx_s = statistics.median(timed(lx, cwd=ROOT, env=env) for _ in range(RUNS))
    tarball = tmp / "mm.tar"
    mm = ["mmdebstrap", "--variant=custom", "--mode=root", "--architectures=amd64",
          f"--include={MM_PACKAGES}", *MM_HOOKS, "bookworm", str(tarball),
          find_mirrors("bookworm").main]
    mm_s = statistics.median(timed(mm) for _ in range(MM_RUNS))
    return lx_s, mm_s, (out / "rootfs.cpio.zst").stat().st_size, tarball.stat().st_size


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
    if sys.argv[1:] == ["startup"]:
        with tempfile.TemporaryDirectory(prefix="lxembed-bench-") as tmp:
            print_startup_rows(startup_rows(Path(tmp), lxembed_env(Path(tmp))))
        return 0
    if sys.argv[1:] == ["suites"]:
        with tempfile.TemporaryDirectory(prefix="lxembed-bench-") as tmp:
            print_suite_rows(suite_rows(Path(tmp), lxembed_env(Path(tmp))))
        return 0
    with tempfile.TemporaryDirectory(prefix="lxembed-bench-") as tmp:
        env = lxembed_env(Path(tmp))
        rows = lxembed_rows(Path(tmp), env)
        by_suite = suite_rows(Path(tmp), env)
        startup = startup_rows(Path(tmp), env)
        lx_s, mm_s, size, mm_size = mmdebstrap_row(Path(tmp), env)
    print(f"{BOARD}, cpio.zst, median of {RUNS} runs, columns alternating in one loop; "
          f"wall seconds, then CPU seconds (user + system)\n")
    cols = ("warm", "no cache", "cold", "by hand")
    for i, what in ((0, "wall"), (1, "CPU")):
        print(f"{what:16} {'debs':>5} " + " ".join(f"{c:>9}" for c in cols)
              + f" {'warm/no cache':>14} {'cpio.zst':>10}")
        for recipe, ndebs, t, size_ in rows:
            print(f"{recipe:16} {ndebs:5} " + " ".join(f"{t[c][i]:8.2f}s" for c in cols)
                  + f" {t['warm'][i] / t['no cache'][i]:14.2f} {size_ / 1e6:9.2f}M")
        print()
    print_suite_rows(by_suite)
    print_startup_rows(startup)
    print(f"qemu-x86_64 busybox: lxembed warm {lx_s:.2f}s, mmdebstrap {mm_s:.2f}s "
          f"(ratio {lx_s / mm_s:.3f}); cpio.zst {size / 1e6:.2f}M, mmdebstrap tar "
          f"{mm_size / 1e6:.2f}M")
    print("goals: warm busybox-python < 0.4 s, gateway < 1.5 s, busybox no slower than without "
          "the cache; cold no slower than no cache; busybox ratio to mmdebstrap <= 0.2")
    oci_archive_against_buildah()
    return 0


if __name__ == "__main__":
    sys.exit(main())
