#!/usr/bin/env python3
"""Container benchmark: lxembed's bind-host container against `lxc-create -t busybox`'s.

Prints, side by side: median start-to-ready and stop time, memory in use once ready, and the
rootfs size (du) of
  - container-bind: the host's /usr bound read-only, the host's python3 running the lxembed
    init (ready = /run/lxembed/ready exists), stopped with `lxc-stop --rcfile` (SIGPWR);
  - the same bind-host container with the host's busybox as init (its inittab only makes the
    ready file), for the memory and stop time of the alternative;
  - the busybox template: the host's busybox copied into a rootfs, busybox init (ready = the
    end of its rcS, marked by a line this script appends), stopped with lxc-stop (SIGUSR1, from
    the template's own config).
Both run with an empty network namespace (the template's veth on lxcbr0 becomes `empty`, since
lxc-net is not assumed) in a private lxcpath (-P): nothing lands in /var/lib/lxc.
Needs root, lxc and the host's busybox (busybox-static) for the template.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lxembed.config import Plan, load_board, load_plan, load_recipe  # noqa: E402
from lxembed.config.loader import source_date_epoch  # noqa: E402
from lxembed.log import set_quiet  # noqa: E402
from lxembed.pipeline import build_image  # noqa: E402

RUNS = 11
MARKER = "/lxembed-bench-ready"


def lxc(tool: str, lxcpath: Path, name: str, *args: str) -> str:
    out = subprocess.run(
        [tool, "-P", str(lxcpath), "-n", name, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if out.returncode != 0:
        raise SystemExit(f"{tool} {name} failed: {out.stderr.strip()}")
    return out.stdout


def du_kb(path: Path) -> int:
    return int(
        subprocess.run(
            ["du", "-sk", str(path)], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )


def memory_kb(lxcpath: Path, name: str) -> int:
    # Bytes from the container's memory cgroup (lxc-info -S -H gives raw numbers).
    text = lxc("lxc-info", lxcpath, name, "-S", "-H")
    m = re.search(r"Memory use:\s+(\d+)", text)
    return int(m.group(1)) // 1024 if m else -1


def one_run(lxcpath: Path, name: str, start_args: list, stop_args: list, ready: str):
    t0 = time.perf_counter()
    lxc("lxc-start", lxcpath, name, "-d", *start_args)
    pid = lxc("lxc-info", lxcpath, name, "-pH").strip()
    marker = f"/proc/{pid}/root{ready}"
    while not os.path.exists(marker):
        if time.perf_counter() - t0 > 10:
            raise SystemExit(f"{name}: not ready after 10 s")
        time.sleep(0.0005)
    t_ready = time.perf_counter() - t0
    time.sleep(0.2)  # let it settle before measuring memory
    mem = memory_kb(lxcpath, name)
    t1 = time.perf_counter()
    lxc("lxc-stop", lxcpath, name, *stop_args)
    return t_ready, time.perf_counter() - t1, mem


def bench(lxcpath: Path, name: str, start_args: list, stop_args: list, ready: str) -> dict:
    lxcpath.mkdir(parents=True, exist_ok=True)
    try:
        runs = [one_run(lxcpath, name, start_args, stop_args, ready) for _ in range(RUNS)]
    finally:  # never leave a container running behind an error
        subprocess.run(["lxc-stop", "-P", str(lxcpath), "-n", name, "-k"], capture_output=True)
    return {
        "ready": statistics.median(r[0] for r in runs),
        "stop": statistics.median(r[1] for r in runs),
        "memory": statistics.median(r[2] for r in runs),
    }


def template_container(lxcpath: Path, name: str) -> Path:
    subprocess.run(
        ["lxc-create", "-t", "busybox", "-P", str(lxcpath), "-n", name],
        check=True,
        capture_output=True,
    )
    config = lxcpath / name / "config"
    text = config.read_text()
    text = re.sub(r"^lxc\.net\.0\..*\n", "", text, flags=re.M) + "lxc.net.0.type = empty\n"
    config.write_text(text)
    rcs = lxcpath / name / "rootfs/etc/init.d/rcS"
    # udhcpc has no interface to ask on; the marker is the end of the template's own start.
    rcs.write_text(rcs.read_text() + f"/bin/touch {MARKER}\n")
    return lxcpath / name / "rootfs"


def main() -> int:
    if os.geteuid() != 0:
        print("needs root (lxc-start)", file=sys.stderr)
        return 1
    set_quiet(True)
    with tempfile.TemporaryDirectory(prefix="lxembed-bench-") as tmp:
        tmp = Path(tmp)
        out = tmp / "bind"
        build_image(load_plan("qemu-x86_64", "container-bind"), out, ["lxc"])
        config = out / "lxc/config"
        ours = bench(
            tmp / "run",
            "bench-bind",
            ["-f", str(config)],
            ["--rcfile", str(config)],
            "/run/lxembed/ready",
        )
        ours["rootfs"] = du_kb(out / "lxc/rootfs")
        # The same bind-host container with the host's busybox as init instead of python3.
        recipe = tmp / "container-bind-busybox.toml"
        recipe.write_text(
            'hostname = "bind-busybox"\n[container]\nmode = "bind-host"\ninit = "busybox"\n'
        )
        plan = Plan(load_board("qemu-x86_64"), load_recipe(str(recipe)), source_date_epoch())
        build_image(plan, tmp / "bindbb", ["lxc"])
        config = tmp / "bindbb/lxc/config"
        ours_bb = bench(
            tmp / "run",
            "bench-bind-bb",
            ["-f", str(config)],
            ["--rcfile", str(config)],
            "/run/lxembed/ready",
        )
        ours_bb["rootfs"] = du_kb(tmp / "bindbb/lxc/rootfs")
        tpl_rootfs = template_container(tmp / "tpl", "bench-busybox")
        theirs = bench(tmp / "tpl", "bench-busybox", [], [], MARKER)
        theirs["rootfs"] = du_kb(tpl_rootfs)
        subprocess.run(
            ["lxc-destroy", "-P", str(tmp / "tpl"), "-n", "bench-busybox"], capture_output=True
        )
    print(f"median of {RUNS} runs, lxc-start -d to ready, lxc-stop to stopped")
    print(f"{'':28} {'start->ready':>13} {'stop':>9} {'memory':>9} {'rootfs (du)':>12}")
    rows = (
        ("lxembed container-bind", ours),
        ("  same, busybox init", ours_bb),
        ("lxc-create -t busybox", theirs),
    )
    for label, r in rows:
        print(
            f"{label:28} {r['ready'] * 1000:10.1f} ms {r['stop'] * 1000:6.0f} ms "
            f"{r['memory'] / 1024:6.1f} MB {r['rootfs']:9d} KB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
