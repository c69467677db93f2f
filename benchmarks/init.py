#!/usr/bin/env python3
"""The Python init against busybox init, side by side on one board and kernel (qemu-arm64).

    python3 benchmarks/init.py                 # qemu-arm64, 3 boots per image (medians)
    python3 benchmarks/init.py -n 5 --json
    python3 benchmarks/init.py -b qemu-mipsel --no-lxc

Boots go exactly as `lxembed test` boots (same qemu command line and kernel options, the
uncompressed rootfs.cpio plus the modules segment), driven over the serial console:

- boot to ready: host wall time from qemu's start to the ready marker, and the guest's uptime
  at that moment (read after the shell answers, minus the host time since the marker);
- the same with processes' address-space randomisation on (test boots pass `norandmaps`: TCG
  keeps translated code by virtual address, so randomised maps cost every dynamically linked
  exec its translation again, the kernel's modprobe calls at boot included; hardware has no
  such cost, and the static busybox none under TCG either);
- where the difference goes, in guest time (CLOCK_MONOTONIC, as the kernel log stamps it):
  the initramfs unpack and the kernel's exec of PID 1 (its log, for both inits), for the
  Python init also the moment its code begins ("init start" of its timeline: what lies between
  is CPython's start), and from PID 1's exec to ready;
- PID 1's VmRSS, from /proc/1/status in the guest;
- the init's own load (unmarshal, module body, imports), in the first Python boot: `/sbin/init
  --help` against a bare `python3 -IS -c pass`, run back to back in the guest, LOAD_ROUNDS
  rounds of 5 each: both meet the same host load, so their difference is steadier than a boot;
- shutdown with 10 services, in the guest: `poweroff` typed on the console until qemu exits
  (-no-reboot). The images for this are `busybox` and `busybox-python` plus 10 services each
  (busybox: `::respawn:` lines in /etc/inittab; the Python init: [[services]] that trap SIGTERM
  and exit 0); the recipes are written to the work directory. With --lxc (the default when root
  and LXC are there) also `lxc-stop` of the container-bind recipe with the same 10 services;
- image size: rootfs.cpio.zst and modules.cpio.zst as `lxembed build -f cpio.zst` writes them
  (and the .xz pair for comparison), with the largest files of the Python image compressed alone
  (zstd -19) for the breakdown.

Boots of the two inits alternate, so a change in the host's load hits both alike.

Goals (issue 6, issue 21): the Python init adds < 0.3 s to boot-to-ready on qemu-arm64 (guest
uptime: the host's wall time carries qemu's own start and the host's load), RSS < 10 MB,
shutdown < 1 s, arm64 busybox-python < 3.0 MB compressed. Exit status 1 if a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lxembed import log  # noqa: E402
from lxembed.arch import host_arch  # noqa: E402
from lxembed.config import list_boards, load_board, load_plan  # noqa: E402
from lxembed.config.loader import find_overlay  # noqa: E402
from lxembed.errors import UserError  # noqa: E402
from lxembed.paths import cache_dir  # noqa: E402
from lxembed.pipeline import (
    build_image,  # noqa: E402
    ensure_image,  # noqa: E402
)
from lxembed.runners import READY  # noqa: E402
from lxembed.runners.accel import choose_accel  # noqa: E402
from lxembed.runners.console import ConsoleClosed, ConsoleTimeout  # noqa: E402
from lxembed.runners.qemu_system import (  # noqa: E402
    BOOT_TIMEOUT,
    CHECK_TIMEOUT,
    QemuSetup,
    initramfs_with_modules,
    qemu_argv,
    running_guest,
)
from lxembed.sources.kernel import fetch_kernel  # noqa: E402

SERVICES = 10
LOAD_ROUNDS = 6
# Five runs of a command, timed by the guest's uptime (10 ms steps: 2 ms a run).
_TIME5 = ('t() {{ a=$(cut -d" " -f1 /proc/uptime); for i in 1 2 3 4 5; do "$@" >/dev/null 2>&1; '
          'done; b=$(cut -d" " -f1 /proc/uptime); echo $(( (${{b/./}} - ${{a/./}}) * 2 )); }}; '
          'for r in $(seq {rounds}); do '
          'echo "load $(t /sbin/init --help) $(t python3 -IS -c pass)"; done')
GOALS = {"boot_added": 0.3, "rss_mb": 10.0, "shutdown": 1.0, "image_mb": 3.0}
# Kernel log lines of a boot (as the init's own timeline reads them): name -> text.
KERNEL_MARKS = {
    "unpack_start": "Trying to unpack rootfs image as initramfs",
    "unpack_done": "Freeing initrd memory",
    "pid1_exec": " as init process",  # "Run /init as init process"
}
_DMESG_LINE = re.compile(r"^\[\s*(\d+\.\d+)\] (.*)$")
# A service that behaves: it exits 0 on SIGTERM (and its sleep child dies with the group).
SERVICE_SH = "trap 'exit 0' TERM; echo up; while :; do sleep 60 & wait; done"


def _recipes(work: Path) -> Dict[str, str]:
    """Recipe name or path per variant; the 10-service ones are written to `work`."""
    work.mkdir(parents=True, exist_ok=True)
    base_inittab = _busybox_inittab()
    lines = "".join(f'::respawn:/bin/sh -c "{SERVICE_SH}"\n' for _ in range(SERVICES))
    busybox_10 = work / "busybox-10-services.toml"
    busybox_10.write_text(
        'base = "busybox"\n'
        f'description = "busybox init with {SERVICES} respawn services (benchmark)"\n'
        f"[files]\n{json.dumps('/etc/inittab')} = {json.dumps(base_inittab + lines)}\n"
    )
    services = "".join(
        f'[[services]]\nname = "s{i}"\ncommand = ["/bin/sh", "-c", {json.dumps(SERVICE_SH)}]\n'
        + (f'after = ["s{i - 1}"]\n' if i else "")
        for i in range(SERVICES)
    )
    python_10 = work / "busybox-python-10-services.toml"
    python_10.write_text(
        f'base = "busybox-python"\ndescription = "the Python init with {SERVICES} services"\n'
        + services
    )
    bind_10 = work / "container-bind-10-services.toml"
    bind_10.write_text(f'base = "container-bind"\n{services}')
    return {
        "busybox": "busybox",
        "python": "busybox-python",
        "busybox-10": str(busybox_10),
        "python-10": str(python_10),
        "bind-10": str(bind_10),
    }


def _busybox_inittab() -> str:
    """The inittab the busybox recipe's overlay installs (the 10 services are added to it)."""
    board = next(b for b in list_boards() if load_board(b).qemu is not None)
    plan = load_plan(board, "busybox")
    for name in plan.recipe.settings["overlays"]:
        path = find_overlay(name) / "etc" / "inittab"
        if path.is_file():
            return path.read_text()
    raise UserError("the busybox recipe has no /etc/inittab overlay")


class Boot:
    """One boot: ready, uptime, PID 1's RSS, then `poweroff` through the init."""

    def __init__(self):
        self.wall: Optional[float] = None
        self.uptime: Optional[float] = None
        self.marks: Dict[str, float] = {}  # guest CLOCK_MONOTONIC: KERNEL_MARKS, init_start
        self.loads: List[tuple] = []  # (ms of `/sbin/init --help`, ms of a bare python3) a round
        self.rss_kb: Optional[int] = None
        self.shutdown: Optional[float] = None
        self.error = ""


def boot_once(board: str, recipe: str, work: Path, log_path: Path, services: int = 0,
              load_rounds: int = 0, aslr: bool = False) -> Boot:
    plan = load_plan(board, recipe)
    setup = QemuSetup.for_board(plan.board)
    kernel = fetch_kernel(plan.board)
    image = ensure_image(plan, work / "images" / plan.recipe.name, "cpio", None, kernel)
    accel = choose_accel(plan.arch)
    timeout = accel.timeout(CHECK_TIMEOUT)
    result = Boot()
    with initramfs_with_modules(image) as initrd, open(log_path, "wb") as log_file:
        argv = qemu_argv(setup, kernel, initrd, accel)
        if aslr:  # processes' maps randomised again, as on a device (test boots: norandmaps)
            i = argv.index("-append") + 1
            argv[i] = " ".join(w for w in argv[i].split() if w != "norandmaps")
        start = time.monotonic()
        with running_guest(argv, log_file) as (proc, console):
            try:
                console.expect(READY, accel.timeout(BOOT_TIMEOUT))
                ready = time.monotonic()
                result.wall = ready - start
                console.sync(timeout)
                status, out = console.run("cat /proc/uptime", timeout)
                # A service's line ("[s7] up") may land among the output: take the uptime's own.
                m = re.search(r"^(\d+\.\d+) \d+\.\d+\s*$", out or "", re.M)
                if status == 0 and m:  # the guest clock at the marker: now minus the host time
                    result.uptime = float(m.group(1)) - (time.monotonic() - ready)
                result.marks = guest_marks(console, timeout)
                if load_rounds:
                    status, out = console.run(_TIME5.format(rounds=load_rounds),
                                              timeout * load_rounds * 4)
                    result.loads = [(int(a), int(b)) for a, b in
                                    re.findall(r"^load (\d+) (\d+)\s*$", out or "", re.M)]
                status, out = console.run("grep VmRSS /proc/1/status", timeout)
                m = re.search(r"VmRSS:\s+(\d+) kB", out or "")
                result.rss_kb = int(m.group(1)) if m else None
                if services:  # let every service reach its SIGTERM trap: a fair stop
                    console.run("sleep 1", timeout)
                t0 = time.monotonic()
                console.send("poweroff\n")
                said = console.drain(accel.timeout(30.0))  # until qemu exits (EOF)
                proc.wait(timeout=5)
                result.shutdown = time.monotonic() - t0
                if proc.returncode != 0:
                    result.error = f"qemu exited with status {proc.returncode}"
                elif re.search(r"lxembed-init: .*SIGKILL", said):
                    result.error = f"a service was SIGKILLed at shutdown (console log {log_path})"
            except (ConsoleTimeout, ConsoleClosed, subprocess.TimeoutExpired) as e:
                result.error = f"{type(e).__name__}: {e} (console log {log_path})"
    return result


def guest_marks(console, timeout: float) -> Dict[str, float]:
    """The boot's kernel marks from dmesg, and the Python init's start from its timeline."""
    marks: Dict[str, float] = {}
    status, out = console.run("dmesg", timeout)
    for line in (out or "").splitlines() if status == 0 else ():
        m = _DMESG_LINE.match(line.strip())
        for name, text in KERNEL_MARKS.items():
            if m and text in m.group(2) and name not in marks:
                marks[name] = float(m.group(1))
    status, out = console.run("cat /run/lxembed/timeline 2>/dev/null", timeout)
    for line in (out or "").splitlines() if status == 0 else ():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if (event.get("name"), event.get("event")) == ("init", "start"):
            marks["init_start"] = event["t"]
    return marks


def phases(boot: Boot) -> Dict[str, Optional[float]]:
    """Guest seconds of each part of a boot, from its marks (None where a mark is missing)."""
    m = boot.marks

    def span(a, b):
        return m[b] - m[a] if a in m and b in m else None

    return {
        "unpack": span("unpack_start", "unpack_done"),
        "pid1_exec": m.get("pid1_exec"),
        "cpython_start": span("pid1_exec", "init_start"),
        "pid1_to_ready": (boot.uptime - m["pid1_exec"]
                          if boot.uptime is not None and "pid1_exec" in m else None),
    }


def lxc_stop_times(recipe: str, work: Path, repeat: int) -> List[float]:
    """`lxc-stop` wall times of the bind-host container with the Python init and 10 services."""
    from lxembed.runners.containers import lxc_start_argv, lxc_stop, remove_lock_dir

    board = next(b for b in list_boards() if load_board(b).arch.debian == host_arch().debian)
    plan = load_plan(board, recipe)
    out = work / "images" / plan.recipe.name
    build_image(plan, out, ["lxc"])
    config, name = out / "lxc" / "config", "lxinit-bench"
    times = []
    for i in range(repeat):
        run = work / f"lxc-run-{i}"
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        console = run / "console.log"
        subprocess.run(
            lxc_start_argv(name, run, config, console_log=console, daemon=True),
            check=True,
            timeout=30,
        )
        try:
            text = ""
            deadline = time.monotonic() + 30
            while text.count("] up") < SERVICES or "lxembed-init: ready" not in text:
                if time.monotonic() > deadline:
                    raise UserError(f"the container did not get ready: {console}")
                time.sleep(0.02)
                text = console.read_text(errors="replace") if console.exists() else ""
            t0 = time.monotonic()
            stop = lxc_stop(name, run, config)
            times.append(time.monotonic() - t0)
            if stop.returncode != 0:
                raise UserError(f"lxc-stop failed: {stop.stderr.strip()}")
            text = console.read_text(errors="replace")
            if "SIGKILL" in text:
                raise UserError(f"a service was SIGKILLed in the container: {console}")
        finally:
            lxc_stop(name, run, config, kill=True)
            remove_lock_dir(run)
    return times


def image_sizes(board: str, recipe: str, work: Path) -> Dict[str, int]:
    plan = load_plan(board, recipe)
    kernel = fetch_kernel(plan.board)
    rootfs = ensure_image(plan, work / "images" / f"{plan.recipe.name}-zst", "cpio.zst", None,
                          kernel)
    modules = rootfs.with_name("modules.cpio.zst")
    sizes = {"rootfs.cpio.zst": rootfs.stat().st_size}
    sizes["modules.cpio.zst"] = modules.stat().st_size if modules.exists() else 0
    sizes["total"] = sizes["rootfs.cpio.zst"] + sizes["modules.cpio.zst"]
    # For comparison: xz (the kernels take it too) packs the ELF files a little tighter.
    xz = ensure_image(plan, work / "images" / f"{plan.recipe.name}-xz", "cpio.xz", None, kernel)
    modules_xz = xz.with_name("modules.cpio.xz")
    sizes["total.xz"] = xz.stat().st_size + (
        modules_xz.stat().st_size if modules_xz.exists() else 0
    )
    return sizes


def largest_files(board: str, recipe: str, work: Path, top: int = 8) -> List[tuple]:
    """(path, bytes, zstd -19 bytes) of the image's largest files, each compressed alone."""
    plan = load_plan(board, recipe)
    root = ensure_image(plan, work / "images" / f"{plan.recipe.name}-dir", "dir", None)
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    files.sort(key=lambda p: p.stat().st_size, reverse=True)
    zstd = zstandard.ZstdCompressor(level=19)
    return [
        ("/" + str(p.relative_to(root)), p.stat().st_size, len(zstd.compress(p.read_bytes())))
        for p in files[:top]
    ]


def _load(boots: List[Boot]) -> Optional[Dict[str, float]]:
    """Medians of the paired load timings: the init, a bare python3, and init minus bare."""
    loads = [x for b in boots for x in b.loads]
    if not loads:
        return None
    return {"init": _median(a for a, _ in loads), "bare": _median(b for _, b in loads),
            "added": _median(a - b for a, b in loads), "rounds": len(loads)}


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def run(args) -> dict:
    work = Path(args.work) if args.work else cache_dir() / "benchmarks" / "init"
    recipes = _recipes(work)
    plan = load_plan(args.board, "busybox-python")
    kernel = fetch_kernel(plan.board)
    accel = choose_accel(plan.arch)
    setup = QemuSetup.for_board(plan.board)
    report = {
        "board": args.board,
        "machine": setup.machine,
        "cpu": setup.cpu,
        "accel": accel.name,
        "kernel": kernel.pin(),
        "initrd": "uncompressed rootfs.cpio + modules.cpio (as lxembed test boots)",
        "boots": args.repeat,
        "inits": {},
    }
    variants = ("busybox", "python", "busybox-10", "python-10", "busybox-aslr", "python-aslr")
    boots: Dict[str, List[Boot]] = {v: [] for v in variants}
    for i in range(args.repeat):  # interleaved: the host's load changes hit both inits alike
        for v in variants:
            services = SERVICES if v.endswith("-10") else 0
            log_path = work / f"console-{v}-{i}.log"
            rounds = LOAD_ROUNDS if v == "python" and i == 0 else 0
            recipe = recipes[v.replace("-aslr", "")]
            boots[v].append(boot_once(args.board, recipe, work, log_path, services, rounds,
                                      aslr=v.endswith("-aslr")))
    for key, label in (("busybox", "busybox init"), ("python", "Python init")):
        ok = [b for b in boots[key] if not b.error]
        shut = [b for b in boots[key + "-10"] if not b.error]
        report["inits"][key] = {
            "label": label,
            "recipe": recipes[key],
            "wall_to_ready": _median(b.wall for b in ok),
            "uptime_at_ready_aslr": _median(b.uptime for b in boots[key + "-aslr"]
                                            if not b.error),
            "uptime_at_ready": _median(b.uptime for b in ok),
            "pid1_rss_kb": _median(b.rss_kb for b in ok),
            "init_load_ms": _load(ok),
            "phases": {k: _median(phases(b)[k] for b in ok) for k in phases(Boot())},
            "shutdown_10_services": _median(b.shutdown for b in shut),
            "image": image_sizes(args.board, recipes[key], work),
            "errors": [b.error for b in boots[key] + boots[key + "-10"] + boots[key + "-aslr"]
                       if b.error],
        }
    # Each Python boot against the busybox boot just before it: the host's load drifts over a
    # run, and a pair meets the same load, so the median of the pairs' differences is steadier
    # than the difference of two medians.
    for suffix in ("", "-aslr"):
        pairs = [p.uptime - b.uptime for b, p in zip(boots["busybox" + suffix],
                                                     boots["python" + suffix])
                 if not b.error and not p.error and None not in (b.uptime, p.uptime)]
        report["added_paired" + suffix.replace("-", "_")] = _median(pairs)
    report["largest_files_python"] = largest_files(args.board, "busybox-python", work)
    if args.lxc:
        times = lxc_stop_times(recipes["bind-10"], work, args.repeat)
        report["lxc_stop_10_services"] = _median(times)
    return report


def verdicts(report: dict) -> Dict[str, tuple]:
    py = report["inits"]["python"]
    added = report.get("added_paired")
    rss = py["pid1_rss_kb"] / 1024 if py["pid1_rss_kb"] is not None else None
    shut = py["shutdown_10_services"]
    image = py["image"]["total"] / 1e6
    return {
        "boot_added": (added, added is not None and added < GOALS["boot_added"]),
        "rss_mb": (rss, rss is not None and rss < GOALS["rss_mb"]),
        "shutdown": (shut, shut is not None and shut < GOALS["shutdown"]),
        "image_mb": (image, image < GOALS["image_mb"]),
    }


def print_report(report: dict) -> None:
    bb, py = report["inits"]["busybox"], report["inits"]["python"]
    v = verdicts(report)
    k = report["kernel"]
    print(
        f"{report['board']} ({report['machine']}, {report['cpu']}, {report['accel']}), "
        f"{k['package']} {k['version']}; {report['initrd']}; "
        f"medians of {report['boots']} boots each"
    )

    def s(x, unit="s", scale=1.0, digits=2):
        return f"{x / scale:.{digits}f} {unit}" if x is not None else "-"

    def goal(key, text):
        value, ok = v[key]
        return f"{text}: {'ok' if ok else 'MISSED'}" if value is not None else text

    pb, pp = bb["phases"], py["phases"]
    rows = [
        ("boot to ready, host wall", s(bb["wall_to_ready"]), s(py["wall_to_ready"]), ""),
        ("boot to ready, guest uptime", s(bb["uptime_at_ready"]), s(py["uptime_at_ready"]),
         goal("boot_added", f"+{s(v['boot_added'][0])} (paired boots' median), "
              f"goal < +0.30 s")),
        ("  with processes' ASLR (no norandmaps)", s(bb["uptime_at_ready_aslr"]),
         s(py["uptime_at_ready_aslr"]), f"+{s(report.get('added_paired_aslr'))}: TCG "
         "translates each exec's code again at its random address"),
        ("  initramfs unpack (kernel)", s(pb["unpack"]), s(pp["unpack"]), "rootfs + modules"),
        ("  kernel runs PID 1", s(pb["pid1_exec"]), s(pp["pid1_exec"]), "uptime"),
        ("  CPython start (to the init's code)", "", s(pp["cpython_start"]), ""),
        ("  PID 1 to ready", s(pb["pid1_to_ready"]), s(pp["pid1_to_ready"]),
         "mounts, modules, network"),
    ]  # fmt: skip
    load = py["init_load_ms"]
    if load:
        rows += [
            ("  init --help / bare python3 (a run)", "", f"{load['init']:.0f} ms",
             f"{load['bare']:.0f} ms bare; the init's load +{load['added']:.0f} ms "
             f"(paired, {load['rounds']} rounds of 5)"),
        ]
    rows += [
        ("PID 1 VmRSS", s(bb["pid1_rss_kb"], "MB", 1024), s(py["pid1_rss_kb"], "MB", 1024),
         goal("rss_mb", "goal < 10 MB")),
        (f"shutdown, {SERVICES} services, in the guest", s(bb["shutdown_10_services"]),
         s(py["shutdown_10_services"]), goal("shutdown", "goal < 1 s")),
        ("rootfs.cpio.zst", s(bb["image"]["rootfs.cpio.zst"], "MB", 1e6),
         s(py["image"]["rootfs.cpio.zst"], "MB", 1e6), ""),
        ("modules.cpio.zst", s(bb["image"]["modules.cpio.zst"], "MB", 1e6),
         s(py["image"]["modules.cpio.zst"], "MB", 1e6), ""),
        ("image, zstd -19, total", s(bb["image"]["total"], "MB", 1e6),
         s(py["image"]["total"], "MB", 1e6), goal("image_mb", "goal < 3.0 MB")),
        ("image, xz -9e, total (for comparison)", s(bb["image"]["total.xz"], "MB", 1e6),
         s(py["image"]["total.xz"], "MB", 1e6), ""),
    ]  # fmt: skip
    print(f"{'':38} {'busybox init':>13} {'Python init':>13}  goal")
    for name, a, b, g in rows:
        print(f"{name:38} {a:>13} {b:>13}  {g}")
    if "lxc_stop_10_services" in report:
        print(
            f"{'lxc-stop, ' + str(SERVICES) + ' services (container-bind)':38} {'':>13} "
            f"{s(report['lxc_stop_10_services']):>13}  host python3, SIGPWR -> reboot(2)"
        )
    print(f"\nlargest files of busybox-python ({report['board']}), each compressed alone:")
    for path, raw, packed in report["largest_files_python"]:
        print(f"  {path:58} {raw / 1e6:6.2f} MB -> {packed / 1e6:5.2f} MB")
    for key in ("busybox", "python"):
        for err in report["inits"][key]["errors"]:
            print(f"{report['inits'][key]['label']}: {err}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-b", "--board", default="qemu-arm64")
    parser.add_argument("-n", "--repeat", type=int, default=3, help="boots per image")
    parser.add_argument("--work", help="images, recipes and console logs (default: the cache)")
    can_lxc = os.geteuid() == 0 and shutil.which("lxc-start") is not None
    parser.add_argument("--lxc", action=argparse.BooleanOptionalAction, default=can_lxc,
                        help="also time lxc-stop of a container with the Python init")  # fmt: skip
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    log.set_quiet(True)
    try:
        report = run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report["goals"] = {k: {"value": val, "ok": ok} for k, (val, ok) in verdicts(report).items()}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0 if all(g["ok"] for g in report["goals"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
