#!/usr/bin/env python3
"""The gateway under qemu-system (TCG), in one run: boot to all service containers ready, the
storage of each container rootfs, and the memory each service adds — a bind-host container
against a self-contained copy of the same service, and busybox init against lxembed's Python
init as the container's PID 1. The "almost no storage or memory" claim, measured.

    python3 benchmarks/gateway.py                    # qemu-arm64, 3 boots to all-ready
    python3 benchmarks/gateway.py -b qemu-mipsel -n 1 --json

Memory is read in the guest once everything is ready: the PSS of every process in the
container's cgroup (shared pages split between their users, so the device's /usr mapped by
every container counts once overall) and the cgroup's memory.current (pages charged to it).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lxembed import log  # noqa: E402
from lxembed.config import load_plan  # noqa: E402
from lxembed.pipeline import ensure_image  # noqa: E402
from lxembed.runners.accel import choose_accel  # noqa: E402
from lxembed.runners.qemu_system import (  # noqa: E402
    BOOT_TIMEOUT,
    CHECK_TIMEOUT,
    QemuSetup,
    initramfs_with_modules,
    qemu_argv,
    running_guest,
)
from lxembed.sources.kernel import fetch_kernel  # noqa: E402

ALL_READY = re.compile(r"\[service-containers\] all containers ready")
GOALS = {"rootfs_kb": 100, "bind_busybox_kb": 1024, "boot_s": 5.0}  # boot goal: qemu-arm64
PAGE = "<p>lxembed benchmark page</p>\\n"

# One service (busybox httpd) four ways: bind-host or self-contained, Python or busybox init.
VARIANTS = {
    "b-py": ("bind-host", "python"),
    "b-bb": ("bind-host", "busybox"),
    "s-py": ("self-contained", "python"),
    "s-bb": ("self-contained", "busybox"),
}
HTTPD = "/bin/busybox httpd -f -p 80 -h /srv/www"


def variant_recipe(name: str, mode: str, init: str) -> str:
    lines = [f'description = "benchmark: httpd, {mode}, {init} init"', f'hostname = "{name}"']
    if mode == "self-contained":
        lines.append('packages = ["busybox-static"]')
        lines.append(f'init = "{init}"')
    lines += ["[files]", f'"/srv/www/index.html" = "{PAGE}"']
    if init == "busybox":  # busybox init runs what /etc/inittab says
        lines.append(f'"/etc/inittab" = "::respawn:{HTTPD}\\n"')
    else:
        lines += ["[[services]]", 'name = "httpd"', f"command = {json.dumps(HTTPD.split())}"]
    lines += ["[container]", f'mode = "{mode}"', f'init = "{init}"', 'apparmor = "unconfined"',
              "[[container.network]]", 'type = "empty"']
    return "\n".join(lines) + "\n"


def bench_recipe(tmp: Path) -> Path:
    """The gateway plus the four variants as service containers of the same device."""
    gateway = load_plan("qemu-arm64", "gateway").recipe.path
    text = f'base = "{gateway}"\ndescription = "gateway + memory benchmark variants"\n'
    for name, (mode, init) in VARIANTS.items():
        (tmp / f"{name}.toml").write_text(variant_recipe(name, mode, init))
        text += (f'\n[[service_containers]]\nname = "{name}"\nrecipe = "{tmp / name}.toml"\n')
    path = tmp / "gateway-bench.toml"
    path.write_text(text)
    return path


MEASURE = r"""for c in %s; do
  pid=$(lxc-info -n $c -p -H); cg=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/$pid/cgroup)
  pss=0; for p in $(cat $(find $cg -name cgroup.procs)); do
    k=$(sed -n 's/^Pss: *\([0-9]*\) kB/\1/p' /proc/$p/smaps_rollup 2>/dev/null)
    pss=$((pss + ${k:-0}))
  done
  echo "MEM $c $pss $(cat $cg/memory.current)"
done"""


def boot(board: str, recipe: str, names, measure: bool) -> dict:
    plan = load_plan(board, recipe)
    setup = QemuSetup.for_board(plan.board)
    kernel = fetch_kernel(plan.board)
    with tempfile.TemporaryDirectory() as tmp:
        image = ensure_image(plan, Path(tmp) / "out", "cpio", None, kernel)
        manifest = json.loads((image.parent / "manifest.json").read_text())
        accel = choose_accel(plan.arch)
        out = {"storage": _storage(manifest, names)}
        with initramfs_with_modules(image) as initrd, open(Path(tmp) / "console.log", "wb") as f:
            start = time.monotonic()
            with running_guest(qemu_argv(setup, kernel, initrd, accel), f) as (_, console):
                console.expect(ALL_READY, accel.timeout(BOOT_TIMEOUT) + 60)
                out["wall"] = time.monotonic() - start
                console.sync(accel.timeout(CHECK_TIMEOUT))
                _, uptime = console.run("cut -d' ' -f1 /proc/uptime", 30)
                out["uptime"] = float(uptime.split()[0])
                if measure:
                    _, text = console.run("sleep 2; " + MEASURE % " ".join(names), 120)
                    out["memory"] = {m[0]: {"pss_kb": int(m[1]), "cgroup_kb": int(m[2]) // 1024}
                                     for m in re.findall(r"^MEM (\S+) (\d+) (\d+)$", text, re.M)}
                console.send("poweroff -f\n")
    return out


def _storage(manifest: dict, names) -> dict:
    sizes = {}
    for name in names:
        prefix = f"/var/lib/lxc/{name}/rootfs/"
        entries = [e for e in manifest["entries"] if e["path"].startswith(prefix)]
        # Apparent bytes plus one 4 KiB block per directory: what it costs on an ext4 flash.
        sizes[name] = {"entries": len(entries),
                       "bytes": sum(e["size"] for e in entries)
                       + 4096 * sum(e["type"] == "dir" for e in entries)}
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--board", default="qemu-arm64")
    parser.add_argument("-n", "--boots", type=int, default=3, help="boots to all-ready")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    log.set_quiet(True)
    services = ["dhcp", "web", "mv", "vl"]
    walls, uptimes = [], []
    for _ in range(args.boots):
        result = boot(args.board, "gateway", services, measure=False)
        walls.append(result["wall"])
        uptimes.append(result["uptime"])
    storage = result["storage"]
    with tempfile.TemporaryDirectory() as tmp:
        bench = boot(args.board, str(bench_recipe(Path(tmp))), list(VARIANTS), measure=True)
    report = {"board": args.board, "boot_to_all_ready_s": statistics.median(walls),
              "guest_uptime_s": statistics.median(uptimes), "boots": len(walls),
              "gateway_storage": storage, "variants_storage": bench["storage"],
              "variants_memory": bench.get("memory", {}), "goals": GOALS}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.board}: boot to all four containers ready {report['boot_to_all_ready_s']:.2f} s "
          f"wall (guest uptime {report['guest_uptime_s']:.2f} s), median of {len(walls)}; "
          f"goal {GOALS['boot_s']} s on qemu-arm64")
    print("\ncontainer rootfs (apparent bytes + 4 KiB per directory; goal < 100 KB):")
    for name, s in storage.items():
        print(f"  {name:6} {s['bytes'] / 1024:7.1f} KB  {s['entries']:4} entries")
    print("\none httpd service four ways, memory it adds (goal: bind-host + busybox init < 1 MB):")
    print(f"  {'variant':8} {'mode':15} {'init':8} {'rootfs KB':>10} {'PSS KB':>8} "
          f"{'cgroup KB':>10}")
    for name, (mode, init) in VARIANTS.items():
        s, m = bench["storage"][name], bench.get("memory", {}).get(name, {})
        print(f"  {name:8} {mode:15} {init:8} {s['bytes'] / 1024:10.1f} "
              f"{m.get('pss_kb', 0):8} {m.get('cgroup_kb', 0):10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
