"""`lxembed net up` / `down` wall time and rule count for generated descriptions of 1, 10 and 100
ports, next to the same set-up done by the equivalent `ip` and `nft` shell commands.

    sudo python benchmarks/net.py [--runs 5]

Runs itself inside a fresh network and mount namespace (`unshare -n -m`, private /run/netns):
the machine's own network is never touched. Each description has one bridge with an address and
N anti-spoofed ports whose peers stay on the host (as for a container runtime). The shell
variant runs one `ip` command per link (as a hand-written script would) and loads the same rule
text with one `nft -f`. Figures are medians; printed, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def description(n: int) -> str:
    out = ['name = "bench"\n\n[[bridge]]\nname = "bbr0"\naddresses = ["10.90.0.1/16"]\n']
    for i in range(n):
        out.append(f'[[port]]\nname = "bv{i}"\nbridge = "bbr0"\npeer = "bc{i}"\n'
                   f'hwaddr = "02:00:00:90:{i // 256:02x}:{i % 256:02x}"\n'
                   f'peer_hwaddr = "02:00:01:90:{i // 256:02x}:{i % 256:02x}"\n'
                   f'addresses = ["10.90.{i // 250}.{i % 250 + 2}/16"]\n')
    return "\n".join(out)


def shell_script(path: Path, up: bool) -> str:
    """The hand-written equivalent: one `ip` per object, the same rules through `nft -f`."""
    from lxembed.net import rules
    from lxembed.net.model import load_description
    m = load_description(path)
    rules_file = path.with_suffix(".nft")
    rules_file.write_text(rules.render(m))
    b = m.bridges[0]
    if not up:
        lines = [f"nft delete table bridge {rules.table_name(m.name)}"]
        lines += [f"ip link del {p.name}" for p in m.ports] + [f"ip link del {b.name}"]
        return "\n".join(lines) + "\n"
    lines = [f"ip link add {b.name} address {b.hwaddr} type bridge stp_state 0 forward_delay 0",
             f"ip link set {b.name} up", f"ip addr add {b.addresses[0]} dev {b.name}"]
    for p in m.ports:
        lines.append(f"ip link add {p.name} address {p.hwaddr} master {b.name} up type veth "
                     f"peer name {p.peer} address {p.peer_hwaddr}")
    lines.append(f"nft -f {rules_file}")
    return "set -e\n" + "\n".join(lines) + "\n"


def timed(cmd, env) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def rule_count() -> int:
    out = subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True, text=True,
                         check=True).stdout
    return sum(1 for x in json.loads(out)["nftables"] if "rule" in x)


IN_PROCESS = """
import sys, time, json
from lxembed.net.apply import net_down, net_up
from lxembed.net.model import load_description
import pyroute2  # noqa: imported before the clock starts, as in a long-running caller
m = load_description(sys.argv[1])
t0 = time.perf_counter(); net_up(m); t1 = time.perf_counter(); net_down(m.name)
print(json.dumps([t1 - t0, time.perf_counter() - t1]))
"""


def bench(runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="lxembed-net-bench-"))
    env = dict(os.environ, LXEMBED_STATE=str(work / "state"), PYTHONPATH=str(ROOT))
    lx = [sys.executable, "-m", "lxembed", "net"]
    print(f"median of {runs} runs, seconds; `lxembed` = the command line (a fresh Python each "
          "time), API = net_up()/net_down() after imports")
    print(f"{'ports':>5} {'rules':>6} | {'lxembed up':>10} {'down':>6} | {'API up':>7} "
          f"{'down':>6} | {'shell up':>8} {'down':>6} | {'API up/shell':>12}")
    for n in (1, 10, 100):
        path = work / f"bench{n}.toml"
        path.write_text(description(n))
        up_sh, down_sh = work / f"up{n}.sh", work / f"down{n}.sh"
        up_sh.write_text(shell_script(path, True))
        down_sh.write_text(shell_script(path, False))
        t = {"up": [], "down": [], "api_up": [], "api_down": [], "sh_up": [], "sh_down": []}
        count = 0
        for _ in range(runs):
            t["up"].append(timed([*lx, "up", str(path)], env))
            count = rule_count()
            t["down"].append(timed([*lx, "down", str(path)], env))
            out = subprocess.run([sys.executable, "-c", IN_PROCESS, str(path)], env=env,
                                 check=True, capture_output=True, text=True).stdout
            api_up, api_down = json.loads(out)
            t["api_up"].append(api_up)
            t["api_down"].append(api_down)
            t["sh_up"].append(timed(["sh", str(up_sh)], env))
            t["sh_down"].append(timed(["sh", str(down_sh)], env))
        med = {k: statistics.median(v) for k, v in t.items()}
        print(f"{n:>5} {count:>6} | {med['up']:>10.3f} {med['down']:>6.3f} | "
              f"{med['api_up']:>7.3f} {med['api_down']:>6.3f} | {med['sh_up']:>8.3f} "
              f"{med['sh_down']:>6.3f} | {med['api_up'] / med['sh_up']:>11.2f}x")
    for what, code in (("Python start + import lxembed.cli", "import lxembed.cli"),
                       ("Python start + import pyroute2", "import pyroute2")):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        print(f"{what}: {time.perf_counter() - start:.3f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (it makes a network namespace)", file=sys.stderr)
        return 2
    if not args.inside:
        script = ("mkdir -p /run/netns && mount -t tmpfs lxembed-bench /run/netns && "
                  'exec "$@"')
        return subprocess.run(["unshare", "-n", "-m", "--propagation", "private", "sh", "-c",
                               script, "sh", sys.executable, __file__, "--inside",
                               "--runs", str(args.runs)]).returncode
    bench(args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
