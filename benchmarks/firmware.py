#!/usr/bin/env python3
"""The firmware format measured, side by side in one run (qemu-arm64, TCG):

- boot to ready three ways, alternating so a busy machine slows all alike: the direct
  `-kernel` boot (the kernel and initramfs dumpimage extracts from the recipe's FIT), the same
  FIT through U-Boot, and the A/B firmware image through U-Boot (boot.scr, the boot state, the
  slot's FIT, the slot and data overlay mounted by the FIT's initramfs);
- the update install time measured inside the guest, as the story test does it (the bundle on
  an ext4 "stick", a second virtio-blk-pci disk made with mke2fs -d): `lxembed-firmware
  install`, timed with the guest's /proc/uptime, for the busybox-python firmware and for the
  gateway (service containers) as firmware;
- each bundle's size against its slot image and slot partition;
- the gateway firmware image's warm build (`lxembed build -f firmware` again, nothing changed).

    python3 benchmarks/firmware.py                     # busybox-python and gateway, 3 boots
    python3 benchmarks/firmware.py -n 1 --no-gateway --json

The recipes are the named ones plus a [fit] key and a [firmware] table, written (with a key
made once) under the cache, so a second run builds nothing. U-Boot's own cost is the time before
the kernel's clock starts (wall time to ready less the guest's uptime then), less the direct
boot's: steadier on a loaded machine than the wall times, in which the kernel's boot varies by
more than U-Boot costs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lxembed import log  # noqa: E402
from lxembed.config import load_plan  # noqa: E402
from lxembed.errors import UserError  # noqa: E402
from lxembed.paths import cache_dir  # noqa: E402
from lxembed.pipeline import ensure_image, image_dir  # noqa: E402
from lxembed.runners import READY  # noqa: E402
from lxembed.runners.accel import choose_accel  # noqa: E402
from lxembed.runners.console import ConsoleClosed, ConsoleTimeout  # noqa: E402
from lxembed.runners.qemu_system import QemuSetup, qemu_argv, running_guest  # noqa: E402
from lxembed.runners.uboot import copy_disk, device_run, key_dtb_for, uboot_run  # noqa: E402
from lxembed.sources.kernel import fetch_kernel  # noqa: E402
from lxembed.writers.swu import read_bundle  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"uboot_added_s": 1.0, "warm_build_s": 2.0}  # the goals (TCG, qemu-arm64)
KEY = "bench"
# Per recipe: its slot and data partitions (a slot must hold the root and its FIT).
SIZES = {"busybox-python": ("160MiB", "16MiB"), "gateway": ("200MiB", "32MiB")}
MEMORY = 1024  # MiB, for the three boot modes alike
UPTIME = "cut -d' ' -f1 /proc/uptime"


def bench_dir() -> Path:
    """Recipes and the signing key of the benchmark, made once and kept (builds stay warm)."""
    where = cache_dir() / "benchmarks" / "firmware"
    keys = where / "keys" / KEY
    if not (keys / f"{KEY}.crt").is_file():
        keys.mkdir(parents=True, exist_ok=True)
        subprocess.run(["openssl", "req", "-batch", "-new", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-keyout", str(keys / f"{KEY}.key"), "-out",
                        str(keys / f"{KEY}.crt"), "-subj", f"/CN={KEY}", "-days", "3650"],
                       check=True, capture_output=True)
    return where


def firmware_recipe(base: str) -> Path:
    """RECIPE as firmware: the named recipe, its FIT and bundle signed with the bench key."""
    slot, data = SIZES[base]
    path = bench_dir() / f"{base}-firmware.toml"
    text = (f'base = "{ROOT / "recipes" / base}.toml"\n'
            f'description = "{base} as A/B firmware (benchmark)"\n'
            f'[fit]\nkey = "keys/{KEY}"\n\n[firmware]\nversion = "1.0"\nkey = "keys/{KEY}"\n'
            f'slot_size = "{slot}"\ndata_size = "{data}"\ntries = 3\ntrial_timeout = 300\n')
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def stick(bundle: Path, dest: Path) -> Path:
    """The "USB stick": an ext4 image holding the bundle, made with mke2fs -d."""
    files = dest / "stick"
    files.mkdir(parents=True)
    shutil.copy(bundle, files / "x.swu")
    image = dest / "stick.img"
    size = bundle.stat().st_size * 5 // 4 // (1 << 20) + 16
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(files), str(image), f"{size}M"],
                   check=True)
    return image


def device_boot(plan, setup, accel, disk: Path, key_dtb, log_path: Path,
                stick_image=None, install: bool = False) -> dict:
    """One power-on of the device disk (written in place, as flash is)."""
    with device_run(plan.board, setup, accel, disk, key_dtb) as argv:
        if stick_image is not None:
            argv += ["-drive", f"file={stick_image},format=raw,if=none,id=stick,snapshot=on",
                     "-device", "virtio-blk-pci,drive=stick"]
        return boot_once(argv, accel, log_path, install)


def boot_once(argv, accel, log_path: Path, install: bool = False) -> dict:
    """qemu started: seconds to the ready marker, the guest's uptime then and, with `install`,
    the in-guest install time of /dev/vdb's x.swu. The uptime is looked for on its own line:
    the console also carries what the init prints meanwhile."""
    out = {}
    start = time.monotonic()
    with open(log_path, "wb") as fh, running_guest(argv, fh) as (proc, console):
        console.expect(READY, accel.timeout(10.0) * 6)
        out["wall"] = time.monotonic() - start
        console.sync(60)
        _, text = console.run("cat /proc/uptime", 60)
        m = re.search(r"^([\d.]+) [\d.]+$", text or "", re.M)
        out["uptime"] = float(m.group(1)) if m else None
        if install:
            status, text = console.run(
                f"mount -o ro /dev/vdb /mnt && a=$({UPTIME}) && "
                f"lxembed-firmware install /mnt/x.swu && b=$({UPTIME}) && "
                "echo \"install_s=$(echo $a $b | awk '{print $2 - $1}')\"", 900)
            m = re.search(r"install_s=([\d.]+)", text or "")
            if status != 0 or not m:
                raise UserError(f"install failed ({status}): {(text or '')[-400:]}")
            out["install"] = float(m.group(1))
        console.send("sync; poweroff -f\n")
        try:
            console.drain(30)
        except ConsoleClosed:
            pass
        proc.wait(30)
    return out


def bundle_sizes(firmware: Path, slot_size: int) -> dict:
    """The bundle against the slot image it carries (its zstd frame says the raw size)."""
    swu = firmware.with_name("rootfs.swu")
    _, files = read_bundle(swu)
    image = next(name for name, _ in files if name.endswith(".zst"))
    with open(swu, "rb") as fh:  # the image's frame header: after the two small files
        data = fh.read()
    at = data.index(image.encode() + b"\0")
    header = data[at + len(image) + 1:][:64].lstrip(b"\0")
    return {"bundle_bytes": swu.stat().st_size,
            "slot_image_bytes": zstandard.frame_content_size(header),
            "slot_partition_bytes": slot_size}


def median(xs):
    return round(statistics.median(xs), 3) if xs else None


def bench_boots(board: str, repeat: int, work: Path) -> dict:
    """busybox-python: direct, FIT through U-Boot, firmware image through U-Boot; install."""
    plan = load_plan(board, str(firmware_recipe("busybox-python")))
    # The firmware tools make the root ~100 MB: as one initramfs (the direct boot) it needs
    # more than the board's 256 MiB, so every mode gets the same 1 GiB.
    setup = dataclasses.replace(QemuSetup.for_board(plan.board), memory=MEMORY)
    accel, kernel = choose_accel(plan.arch), fetch_kernel(plan.board)
    fit = ensure_image(plan, image_dir(plan, None, "fit"), "fit", None, kernel)
    firmware = ensure_image(plan, image_dir(plan, None, "firmware"), "firmware", None, kernel)
    count = subprocess.run(["dumpimage", "-l", str(fit)], capture_output=True, text=True,
                           check=True).stdout.count(" Image ")

    def extract(index: int, dest: Path) -> Path:
        subprocess.run(["dumpimage", "-T", "flat_dt", "-p", str(index), "-o", str(dest),
                        str(fit)], check=True, capture_output=True)
        return dest
    direct_kernel = dataclasses.replace(kernel, image=extract(0, work / "kernel"), vmlinux=None)
    ramdisk = extract(count - 1, work / "ramdisk")
    disk = copy_disk(firmware, work / "device.img")
    fw_key = firmware.with_name("rootfs.fit.key.dtb")
    fw_key = fw_key if fw_key.exists() else None
    # The factory image's first boot formats the data partition: measured on its own.
    first = device_boot(plan, setup, accel, disk, fw_key, work / "first.log")
    runs = {"direct": [], "uboot-fit": [], "firmware": []}
    errors = []
    direct_argv = qemu_argv(setup, direct_kernel, ramdisk, accel)
    with uboot_run(plan.board, setup, accel, fit, key_dtb_for(fit)) as fit_argv:
        for i in range(repeat):
            for mode in runs:
                try:
                    if mode == "firmware":
                        r = device_boot(plan, setup, accel, disk, fw_key, work / f"fw-{i}.log")
                    else:
                        r = boot_once(fit_argv if mode == "uboot-fit" else direct_argv, accel,
                                      work / f"{mode}-{i}.log")
                except (ConsoleTimeout, ConsoleClosed) as err:
                    errors.append(f"{mode}: {err}")
                    continue
                runs[mode].append((r["wall"], r["uptime"]))
    install = device_boot(plan, setup, accel, disk, fw_key, work / "install.log",
                          stick(firmware.with_name("rootfs.swu"), work), install=True)
    rows = {}
    for mode, xs in runs.items():
        rows[mode] = {"ready_s": median([w for w, _ in xs]),
                      "uptime_s": median([u for _, u in xs if u is not None]),
                      "before_kernel_s": median([w - u for w, u in xs if u is not None]),
                      "boots": len(xs)}
    added = {mode: round(rows[mode]["before_kernel_s"] - rows["direct"]["before_kernel_s"], 3)
             for mode in ("uboot-fit", "firmware")
             if rows[mode]["before_kernel_s"] is not None
             and rows["direct"]["before_kernel_s"] is not None}
    return {"board": board, "accel": accel.name, "kernel": kernel.pin(), "boots": rows,
            "uboot_added_s": added, "first_boot_ready_s": round(first["wall"], 3),
            "install_s": install["install"],
            "sizes": bundle_sizes(firmware, int(SIZES["busybox-python"][0][:-3]) << 20),
            "errors": errors}


def bench_gateway(board: str, work: Path) -> dict:
    """The gateway as firmware: warm build, its boot to ready through U-Boot, install time."""
    recipe = firmware_recipe("gateway")
    plan = load_plan(board, str(recipe))
    out = image_dir(plan, None, "firmware")
    kernel = fetch_kernel(plan.board)
    firmware = ensure_image(plan, out, "firmware", None, kernel)  # cold, if ever
    warm = []
    for _ in range(2):  # the whole command, as a user runs it: interpreter start included
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "lxembed", "-q", "build", "-b", board, "-r",
                        str(recipe), "-o", str(work / "gw-build"), "-f", "firmware"],
                       check=True, capture_output=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        warm.append(time.monotonic() - start)
    setup, accel = QemuSetup.for_board(plan.board), choose_accel(plan.arch)
    disk = copy_disk(firmware, work / "gw-device.img")
    key = firmware.with_name("rootfs.fit.key.dtb")
    r = device_boot(plan, setup, accel, disk, key if key.exists() else None,
                    work / "gw-install.log", stick(firmware.with_name("rootfs.swu"),
                                                   work / "gw-stick"), install=True)
    return {"warm_build_s": round(min(warm[1:] or warm), 3), "first_boot_ready_s":
            round(r["wall"], 3), "install_s": r["install"],
            "sizes": bundle_sizes(firmware, int(SIZES["gateway"][0][:-3]) << 20)}


def table(result: dict) -> str:
    b = result["boots"]
    lines = [f"{result['board']} ({result['accel']}), {result['kernel']}", "",
             f"{'boot to ready (median)':<34}{'wall s':>8}{'uptime s':>10}{'pre-kernel s':>14}",
             ]
    for mode, label in (("direct", "direct -kernel (FIT's kernel+initrd)"),
                        ("uboot-fit", "U-Boot, the FIT from a FAT disk"),
                        ("firmware", "U-Boot, A/B firmware image")):
        row = b[mode]
        lines.append(f"{label:<34}{row['ready_s'] or '-':>8}{row['uptime_s'] or '-':>10}"
                     f"{row['before_kernel_s'] or '-':>14}")
    for mode, added in result["uboot_added_s"].items():
        verdict = "meets" if added < GOALS["uboot_added_s"] else "misses"
        lines.append(f"  U-Boot adds {added:+.3f} s before the kernel ({mode}): {verdict} the "
                     f"{GOALS['uboot_added_s']:.0f} s goal")
    lines += ["", f"{'firmware':<16}{'1st boot s':>11}{'install s':>11}{'bundle MB':>11}"
              f"{'slot img MB':>13}{'slot MB':>9}{'warm build s':>14}"]
    rows = [("busybox-python", result)] + ([("gateway", result["gateway"])]
                                           if result.get("gateway") else [])
    for name, r in rows:
        s = r["sizes"]
        lines.append(f"{name:<16}{r['first_boot_ready_s']:>11}{r['install_s']:>11}"
                     f"{s['bundle_bytes'] / 1e6:>11.1f}{s['slot_image_bytes'] / 1e6:>13.1f}"
                     f"{s['slot_partition_bytes'] / 1e6:>9.1f}{r.get('warm_build_s', '-'):>14}")
    if result.get("gateway"):
        warm = result["gateway"]["warm_build_s"]
        lines.append(f"  gateway firmware warm build {warm} s: "
                     f"{'meets' if warm < GOALS['warm_build_s'] else 'misses'} the "
                     f"{GOALS['warm_build_s']:.0f} s goal")
    lines += [f"  error: {e}" for e in result["errors"]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-b", "--board", default="qemu-arm64")
    parser.add_argument("-n", "--repeat", type=int, default=3, help="boots of each kind")
    parser.add_argument("--no-gateway", action="store_true", help="busybox-python only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    log.set_quiet(True)
    try:
        with tempfile.TemporaryDirectory(prefix="lxembed-bench-fw-") as tmp:
            result = bench_boots(args.board, args.repeat, Path(tmp))
            if not args.no_gateway:
                result["gateway"] = bench_gateway(args.board, Path(tmp))
    except UserError as exc:
        print(f"firmware.py: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
