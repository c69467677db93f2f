"""The board's hardware watchdog, fed by the Python init from its own loop (qemu's i6300esb on
the arm64 virt machine, `-action watchdog=reset`): a device whose init keeps running outlives
the watchdog's timeout many times over; one whose userland hangs — a real-time busy loop that
starves PID 1 — is reset by the hardware (qemu runs with -no-reboot: the reset ends qemu) with
no power-off of its own.
"""

from __future__ import annotations

import time

import pytest
from guest_session import boot_session

from lxembed.config import load_plan

pytestmark = [pytest.mark.slow, pytest.mark.qemu]

RECIPE = 'base = "busybox-python"\ndescription = "busybox-python with its watchdog fed"\n' \
         "[watchdog]\ntimeout = 4\n"
# SCHED_FIFO 99 without the real-time throttle: nothing else runs on the one CPU, PID 1 included.
HOG = ("echo -1 > /proc/sys/kernel/sched_rt_runtime_us; /usr/bin/python3 -IS -c 'import os; "
       "os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(99))\nwhile True: pass' &")


def test_a_fed_watchdog_keeps_the_device_up_and_a_hung_one_resets_it(tmp_path):
    (tmp_path / "wd.toml").write_text(RECIPE)
    plan = load_plan("qemu-arm64", str(tmp_path / "wd.toml"))
    commands = [("fed", "sleep 9; cat /proc/uptime; grep -c i6300esb /proc/modules"),
                ("init-json", "cat /etc/lxembed/init.json | grep -A3 watchdog")]
    start = time.monotonic()
    # The hog is the command that ends the session: qemu must exit by itself, reset by the
    # watchdog (4 s without a feed), not by any power-off.
    session = boot_session(plan, tmp_path / "out", commands, end=HOG, end_timeout=30.0)
    console = (tmp_path / "out" / "console.log").read_text(errors="replace")
    assert "lxembed-init: watchdog /dev/watchdog: fed every 1.33333s, resets after 4s" in console
    status, text = session.results["fed"]
    assert status == 0 and float(text.split()[0]) > 10, text  # two timeouts and more, still up
    assert text.split()[-1] == "1", text  # the board's watchdog module is loaded
    assert '"timeout": 4' in session.results["init-json"][1]
    assert session.exit_status is not None, f"qemu did not end: {session.error}\n{console[-2000:]}"
    assert "Power down" not in session.shutdown and "poweroff" not in session.shutdown
    # Not at once (a crash), but once the last feed is 4 s old: it came at most 1.33 s before.
    assert 2.5 < session.poweroff_seconds < 25.0, session.poweroff_seconds
    assert time.monotonic() - start < 120
