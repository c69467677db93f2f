"""The Python init under an OCI runtime (crun), with a main service: what `docker run --init`
users expect. The bundle is a real bind-host build (`[container] mode = "bind-host"`, the
host's python3 running the init), so the `main` key travels recipe -> init.json -> init.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from init_helpers import crun_argv, wait_until

from lxembed.config import load_plan
from lxembed.pipeline import build_image

pytestmark = [pytest.mark.slow, pytest.mark.lxc]

CRUN = crun_argv()
if os.geteuid() != 0 or CRUN is None:
    pytestmark.append(pytest.mark.skip(reason="needs root and crun"))

RECIPE = """\
base = "container-bind"

[[services]]
name = "app"
main = true
after = ["hello"]
command = ["/bin/sh", "-c", "echo app up; %s"]
"""


def run_bundle(tmp_path: Path, app: str, stop: str | None) -> tuple[int, str, float]:
    """Build and run the bundle; (crun's exit status, the console, seconds after `stop`)."""
    recipe = tmp_path / "app.toml"
    recipe.write_text(RECIPE % app)
    out = tmp_path / "build"
    build_image(load_plan("qemu-x86_64", str(recipe)), out, ["oci"])
    name = "lxinit-oci-%d" % os.getpid()
    console = tmp_path / "console"
    with open(console, "wb") as fh:
        proc = subprocess.Popen(CRUN + ["run", "--bundle", str(out / "oci"), name],
                                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)
    took = 0.0
    try:
        wait_until(lambda: "[app] app up" in console.read_text(), timeout=10)
        if stop:
            start = time.monotonic()
            subprocess.run(CRUN + ["kill", name, stop], check=True)
        status = proc.wait(10)
        took = time.monotonic() - start if stop else 0.0
    finally:
        if proc.poll() is None:
            subprocess.run(CRUN + ["kill", name, "KILL"], capture_output=True)
            proc.wait(5)
        subprocess.run(CRUN + ["delete", "-f", name], capture_output=True)
    return status, console.read_text(), took


def test_main_service_exit_status_is_the_containers(tmp_path):
    status, console, _ = run_bundle(tmp_path, "sleep 0.3; exit 5", None)
    assert status == 5, console
    assert "app: exit status 5: the main service ended" in console
    assert "container stopped, exit status 5" in console


def test_crun_kill_reaches_the_main_service_and_its_status_is_the_containers(tmp_path):
    status, console, took = run_bundle(tmp_path, "exec sleep 60", "TERM")
    assert status == 128 + 15, console  # sleep killed by the SIGTERM the init passed on
    assert took < 1.0
    assert "app: stopped (killed by SIGTERM)" in console
