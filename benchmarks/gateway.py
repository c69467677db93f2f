#!/usr/bin/env python3
"""The gateway under qemu-system (TCG), in one run: boot to all service containers ready (the
device's init says "healthy"), where those seconds go (the init's boot timeline), how long a
container killed with SIGKILL takes to serve again, the storage of each container rootfs, and
the memory each service adds — a bind-host container against a self-contained copy of the same
service, and busybox init against lxembed's Python init as the container's PID 1, with the
lxc-start monitor each container keeps. The "almost no storage or memory" claim, measured.

    python3 benchmarks/gateway.py                    # qemu-arm64, 3 boots to all-ready
    python3 benchmarks/gateway.py -b qemu-mipsel -n 1 --json
    python3 benchmarks/gateway.py --timeline docs/gateway-timeline   # + its SVG and JSON

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
from lxembed.reports.timeline import (  # noqa: E402
    milestones,
    parse_events,
    spans,
    timeline_json,
    timeline_svg,
)
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

ALL_READY = re.compile(r"lxembed-init: healthy")
GOALS = {"rootfs_kb": 100, "bind_busybox_kb": 1024, "boot_s": 4.0, "boot_mipsel_s": 10.0,
         "restart_s": 3.0}  # restart: serving again, after its 1 s backoff
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
  mon=$(cut -d' ' -f4 /proc/$pid/stat)  # its init's parent: the lxc-start monitor
  mpss=$(sed -n 's/^Pss: *\([0-9]*\) kB/\1/p' /proc/$mon/smaps_rollup 2>/dev/null)
  echo "MEM $c $pss $(cat $cg/memory.current) ${mpss:-0}"
done"""
# kill -9 of web's init, then: how long until it serves again (the init restarts it after 1 s).
RESTART = r"""old=$(lxc-info -n web -p -H); t0=$(cut -d' ' -f1 /proc/uptime); kill -9 $old
for i in $(seq 300); do
  new=$(lxc-info -n web -p -H 2>/dev/null)
  [ -n "$new" ] && [ "$new" != "$old" ] && wget -q -O /dev/null http://10.88.0.10/ && break
  sleep 0.05
done
echo "RESTART $(echo "$t0 $(cut -d' ' -f1 /proc/uptime)" | awk '{printf "%.2f", $2 - $1}')"
"""


def boot(board: str, recipe: str, names, measure: bool, restart: bool = False,
         smp: int = None) -> dict:
    plan = load_plan(board, recipe)
    setup = QemuSetup.for_board(plan.board, smp=smp)
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
                _, out["timeline"] = console.run("cat /run/lxembed/timeline", 30)
                if restart:
                    _, text = console.run(RESTART, 60)
                    out["restart"] = float(re.search(r"RESTART ([0-9.]+)", text).group(1))
                if measure:
                    _, text = console.run("sleep 2; " + MEASURE % " ".join(names), 120)
                    out["memory"] = {m[0]: {"pss_kb": int(m[1]), "cgroup_kb": int(m[2]) // 1024,
                                            "monitor_pss_kb": int(m[3])}
                                     for m in re.findall(r"^MEM (\S+) (\d+) (\d+) (\d+)$",
                                                         text, re.M)}
                console.send("poweroff -f\n")
    return out


def _phases(events) -> dict:
    """Seconds of the boot by part, from the timeline: the kernel, CPython's start, the init's
    set-up steps, the device's network, and each container's start to ready."""
    out = {}
    for span in spans(events):
        if span.phase in ("kernel", "python", "setup") or (
                span.phase == "starting" and span.name not in out and span.name != "rescue-shell"):
            key = span.name if span.phase != "starting" else f"{span.name} (start to ready)"
            out.setdefault(key, round(span.end - span.start, 3))
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
    parser.add_argument("--no-smp2", dest="smp2", action="store_false",
                        help="skip the boots with two guest CPUs")
    parser.add_argument("--timeline", metavar="PATH",
                        help="write the median boot's timeline as PATH.svg and PATH.json")
    args = parser.parse_args()
    log.set_quiet(True)
    services = ["dhcp", "web", "mv", "vl"]
    results = [boot(args.board, "gateway", services, measure=False, restart=True)
               for _ in range(args.boots)]
    # The same board with two CPUs (a dual-core SoC, as most gateways have): TCG runs each
    # guest CPU on a host thread, so the containers' parallel starts really overlap.
    dual = [boot(args.board, "gateway", services, measure=False, smp=2)
            for _ in range(args.boots)] if args.smp2 else []
    walls = [r["wall"] for r in results]
    uptimes = [r["uptime"] for r in results]
    median = sorted(results, key=lambda r: r["uptime"])[len(results) // 2]
    events = parse_events(median["timeline"])
    if args.timeline:
        title = f"{args.board}/gateway: boot timeline (CLOCK_MONOTONIC seconds, TCG)"
        base = Path(args.timeline)
        base.parent.mkdir(parents=True, exist_ok=True)
        base.with_suffix(".json").write_text(timeline_json(events, title))
        base.with_suffix(".svg").write_text(timeline_svg(events, title))
    storage = median["storage"]
    with tempfile.TemporaryDirectory() as tmp:
        bench = boot(args.board, str(bench_recipe(Path(tmp))), list(VARIANTS), measure=True)
    report = {"board": args.board, "boot_to_all_ready_s": statistics.median(walls),
              "guest_uptime_s": statistics.median(uptimes), "boots": len(walls),
              "healthy_at_s": milestones(events).get("init healthy"),
              "smp2_boot_to_all_ready_s": statistics.median(r["wall"] for r in dual)
              if dual else None,
              "smp2_guest_uptime_s": statistics.median(r["uptime"] for r in dual)
              if dual else None,
              "restart_s": statistics.median(r["restart"] for r in results),
              "phases_s": _phases(events),
              "gateway_storage": storage, "variants_storage": bench["storage"],
              "variants_memory": bench.get("memory", {}), "goals": GOALS}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.board}: boot to all four containers ready {report['boot_to_all_ready_s']:.2f} s "
          f"wall (guest uptime {report['guest_uptime_s']:.2f} s), median of {len(walls)}; "
          f"goal {GOALS['boot_s']} s on qemu-arm64, {GOALS['boot_mipsel_s']} s on qemu-mipsel")
    if dual:
        print(f"  with 2 guest CPUs (--smp 2): {report['smp2_boot_to_all_ready_s']:.2f} s wall "
              f"(guest uptime {report['smp2_guest_uptime_s']:.2f} s), median of {len(dual)}")
    print(f"  healthy at {report['healthy_at_s']} s of guest time (median boot); where it goes:")
    for name, seconds in report["phases_s"].items():
        print(f"    {name:28} {seconds:6.2f} s")
    print(f"web killed with SIGKILL: serving again in {report['restart_s']:.2f} s (median; "
          f"1 s of it the init's backoff; goal {GOALS['restart_s']} s + backoff)")
    print("\ncontainer rootfs (apparent bytes + 4 KiB per directory; goal < 100 KB):")
    for name, s in storage.items():
        print(f"  {name:6} {s['bytes'] / 1024:7.1f} KB  {s['entries']:4} entries")
    print("\none httpd service four ways, memory it adds (goal: bind-host + busybox init < 1 MB):")
    print(f"  {'variant':8} {'mode':15} {'init':8} {'rootfs KB':>10} {'PSS KB':>8} "
          f"{'cgroup KB':>10} {'lxc-start PSS KB':>17}")
    for name, (mode, init) in VARIANTS.items():
        s, m = bench["storage"][name], bench.get("memory", {}).get(name, {})
        print(f"  {name:8} {mode:15} {init:8} {s['bytes'] / 1024:10.1f} "
              f"{m.get('pss_kb', 0):8} {m.get('cgroup_kb', 0):10} "
              f"{m.get('monitor_pss_kb', 0):17}")
    print("  (the device's init supervises each container through its lxc-start monitor, the "
          "process LXC keeps anyway: no other process per container)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
