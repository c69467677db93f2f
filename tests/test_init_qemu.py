"""The Python init as PID 1 on a real kernel: `busybox-python` under qemu-system.

Each board boots once (a module-scoped fixture): to the ready marker, through the standard
checks of `lxembed test` (qemu/checks.toml), through checks of what the init set up in device
mode, then an orderly `poweroff`: busybox sends SIGUSR2 to PID 1, the init stops its services
and calls reboot(2) with RB_POWER_OFF, and qemu (-no-reboot) exits on its own. Unlike
`lxembed test`, which ends with `poweroff -f`, the power-off here goes through the init.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from guest_session import GuestSession, boot_session

from lxembed.config import load_plan
from lxembed.runners import Check, load_checks

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

RECIPE = "busybox-python"
BOARDS = ["qemu-arm64", "qemu-mipsel", "qemu-riscv64"]
POWEROFF_TIMEOUT = 5.0  # KVM-sized, scaled for TCG like the runner's
# Console lines of the init that mean a setup step went wrong. The kernel hands init the
# command-line words it does not know (nokaslr on malta and arm64): the init notes and ignores
# them, that is no trouble.
TROUBLE = re.compile(
    r"lxembed-init: (?!ignoring argument).*(failed|cannot|timed out|exit status [1-9]|"
    r"no modprobe|no udhcpc|no ip command|ignoring|error)"
)

# Checks of what the init did in device mode: (name, command, expected output regex).
INIT_CHECKS = [
    ("pid1-is-the-init", "tr '\\0' ' ' < /proc/1/cmdline", r"^/usr/bin/python3\.1[13] -IS /init"),
    ("ready-file", "ls /run/lxembed/ready", r"^/run/lxembed/ready$"),
    ("mounts", "cut -d' ' -f2,3 /proc/mounts",
     r"(?s)(?=.*^/dev devtmpfs$)(?=.*^/dev/pts devpts$)(?=.*^/sys sysfs$)"
     r"(?=.*^/run tmpfs$)(?=.*^/tmp tmpfs$)(?=.*^/dev/shm tmpfs$)"),
    ("lo-up", "ip link show lo", r"<LOOPBACK,UP,LOWER_UP>"),
    # The lease through rtnetlink: the address lives as long as the lease, the route is dhcp's.
    ("dhcp-lease", "ip -4 addr show dev eth0; ip -4 route; cat /etc/resolv.conf",
     r"(?s)inet 10\.0\.2\.15/24 brd 10\.0\.2\.255 .*dynamic.*valid_lft 86\d\d\dsec.*"
     r"default via 10\.0\.2\.2 dev eth0 .*nameserver 10\.0\.2\.3"),
    ("init-rss", "grep VmRSS /proc/1/status", r"^VmRSS:\s+\d+ kB$"),
    # The rescue shell got the console as its controlling tty (TIOCSCTTY): job control, Ctrl-C.
    ("rescue-shell-tty", "set -- $(cat /proc/$$/stat); echo tty=$7", r"^tty=[1-9]\d*$"),
]  # fmt: skip


@dataclass
class Boot(GuestSession):
    board: str = ""
    standard: List[Check] = field(default_factory=list)  # qemu/checks.toml, as `lxembed test`

    @property
    def checks(self) -> Dict[str, Tuple[Optional[int], str]]:
        return self.results


def _boot(board: str, out: Path) -> Boot:
    plan = load_plan(board, RECIPE)
    standard = load_checks(plan, "system")
    commands = [(c.name, c.command) for c in standard] + [c[:2] for c in INIT_CHECKS]
    # busybox poweroff: SIGUSR2 to PID 1; the init's shutdown ends in reboot(2).
    session = boot_session(plan, out, commands, end_timeout=POWEROFF_TIMEOUT)
    return Boot(**vars(session), board=board, standard=standard)


@pytest.fixture(scope="module", params=BOARDS)
def boot(request, tmp_path_factory) -> Boot:
    b = _boot(request.param, tmp_path_factory.mktemp(request.param))
    print(f"\n{b.board}: ready after {b.boot_seconds or 0:.2f} s (host wall time), "
          f"powered off {b.poweroff_seconds or 0:.2f} s after `poweroff`")  # fmt: skip
    return b


def test_boots_to_ready_in_device_mode(boot):
    assert boot.boot_seconds is not None, boot.error
    assert "lxembed-init: mode device, busybox signal table" in boot.before_ready
    trouble = [line for line in boot.before_ready.splitlines() if TROUBLE.search(line)]
    assert not trouble, boot.before_ready
    # DHCP went through the init's own client (qemu's server: a day's lease, DNS at .3).
    assert ("lxembed-init: eth0: lease of 10.0.2.15/24 from 10.0.2.2, router 10.0.2.2, "
            "dns 10.0.2.3, 86400 s") in boot.before_ready


def test_standard_checks_pass(boot):
    assert boot.standard and not boot.error, boot.error
    failed = {}
    for check in boot.standard:
        status, output = boot.checks.get(check.name, (None, ""))
        if status is None or not check.judge(status, output):
            failed[check.name] = (status, output)
    assert not failed, failed


@pytest.mark.parametrize("name", [c[0] for c in INIT_CHECKS])
def test_what_the_init_set_up(boot, name):
    assert name in boot.checks, boot.error
    status, output = boot.checks[name]
    expect = dict((c[0], c[2]) for c in INIT_CHECKS)[name]
    assert status == 0 and re.search(expect, output, re.M), (status, output)
    if name == "init-rss":
        print(f"{boot.board}: PID 1 {output.split(':')[1].strip()}")


def test_poweroff_goes_through_the_init(boot):
    assert boot.exit_status is not None, f"{boot.error}\n{boot.shutdown}"
    text = boot.shutdown
    order = ["lxembed-init: SIGUSR2: poweroff", "lxembed-init: poweroff: stopping services",
             "lxembed-init: rescue-shell: stopped (killed by SIGHUP)", "lxembed-init: poweroff\n",
             "reboot: Power down"]  # fmt: skip
    at = [text.find(s) for s in order]
    assert -1 not in at and at == sorted(at), text
    assert "SIGKILL" not in text and "would not die" not in text, text
    assert boot.exit_status == 0, text  # qemu exits by itself on the guest's power-off


# -- a VLAN and a main service on a device ------------------------------------------------

# busybox-python plus an 802.1Q VLAN on eth0 (the module comes with the image's modules) and a
# main service that exits with status 3 once /tmp/app-stop exists: a device has no one to hand
# that status to, so the init stops the rest and powers off.
VLAN_APP_RECIPE = """\
base = "busybox-python"
modules = ["8021q"]

[network]
interfaces = [{ name = "eth0.20", vlan = 20, link = "eth0", ipv4 = ["192.0.2.2/24"] }]

[[services]]
name = "app"
main = true
command = ["/bin/sh", "-c", "echo app up; while [ ! -e /tmp/app-stop ]; do sleep 0.2; done; exit 3"]
"""


@pytest.fixture(scope="module")
def vlan_app_boot(tmp_path_factory):
    work = tmp_path_factory.mktemp("vlan-app")
    recipe, out = work / "vlan-app.toml", work / "build"
    recipe.write_text(VLAN_APP_RECIPE)
    plan = load_plan("qemu-arm64", str(recipe))
    # busybox ip has no -d: the VLAN's id and parent from 8021q's /proc file.
    commands = [("vlan", "ip addr show eth0.20; cat /proc/net/vlan/config"),
                ("parent", "ip link show eth0")]
    session = boot_session(plan, out, commands, end="touch /tmp/app-stop",  # main exits 3
                           end_timeout=POWEROFF_TIMEOUT, log=work / "console.log")
    result = {"checks": session.results, "before_ready": session.before_ready,
              "shutdown": session.shutdown, "exit_status": session.exit_status,
              "error": session.error}
    return result


def test_vlan_interface_on_a_device(vlan_app_boot):
    boot = vlan_app_boot
    assert "vlan" in boot["checks"], boot["error"] + boot["before_ready"]
    status, output = boot["checks"]["vlan"]
    assert status == 0, (output, boot["before_ready"])
    assert re.search(r"^eth0\.20\s*\|\s*20\s*\|\s*eth0$", output, re.M), output
    assert "inet 192.0.2.2/24" in output, output
    assert "eth0.20@eth0" in output
    assert ",UP" in boot["checks"]["parent"][1]
    trouble = [line for line in boot["before_ready"].splitlines() if TROUBLE.search(line)]
    assert not trouble, boot["before_ready"]


def test_main_service_ending_powers_a_device_off(vlan_app_boot):
    boot = vlan_app_boot
    text = boot["shutdown"]
    assert boot["exit_status"] is not None, boot["error"] + text
    order = ["lxembed-init: app: exit status 3: the main service ended",
             "lxembed-init: the main service ended: stopping services",
             "lxembed-init: rescue-shell: stopped (killed by SIGHUP)",
             "lxembed-init: poweroff\n", "reboot: Power down"]  # fmt: skip
    at = [text.find(s) for s in order]
    assert -1 not in at and at == sorted(at), text
    assert boot["exit_status"] == 0, text  # qemu exits by itself on the guest's power-off
