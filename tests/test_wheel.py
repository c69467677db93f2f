"""The package as a user installs it: an sdist and a wheel built from a copy of the checkout,
installed (not editable) in a fresh venv, run from a directory outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

from lxembed.config.toml_lines import tomllib

pytestmark = pytest.mark.slow

# What a checkout holds that is not source (and can be large: images under out/).
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "out", "build", "dist", "*.egg-info",
                                     "__pycache__", ".pytest_cache", ".ruff_cache")


def _env() -> dict:
    """Nothing may lead back to the checkout: no PYTHONPATH, no LXEMBED_PATH."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LXEMBED_PATH")}


def _run(*cmd, cwd: Path = None) -> str:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd,
                            env=_env())
    assert result.returncode == 0, f"{cmd}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _venv(path: Path) -> list:
    """A fresh venv, and the pip command that installs into it. It has no pip of its own
    (ensurepip alone took 10 s): this pip installs into it, through --python."""
    _run(sys.executable, "-m", "venv", "--without-pip", path)
    return [sys.executable, "-m", "pip", "--python", path / "bin/python", "-q",
            "--disable-pip-version-check"]


@dataclass
class Installed:
    venv: Path  # the wheel and its dependencies, nothing else: a user's venv
    builder: Path  # the venv that built it: build and the backend, no lxembed
    builder_pip: list
    src: Path  # the copy of the checkout it was built from
    sdist: Path
    wheel: Path
    build_log: str

    def run(self, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.venv / "bin/lxembed"), *args], capture_output=True,
                              text=True, cwd=cwd, env=_env())


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """Built once for this module: `python -m build` makes the sdist, then the wheel from the
    sdist (so the sdist must carry everything), with the backend pyproject.toml names installed
    once in a builder venv (isolated build environments took a third longer)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)  # the build writes build/ into its source
    with open(ROOT / "pyproject.toml", "rb") as fh:
        backend = tomllib.load(fh)["build-system"]["requires"]
    builder_pip = _venv(tmp / "builder")
    _run(*builder_pip, "install", "build", *backend)
    log = _run(tmp / "builder/bin/python", "-m", "build", "--no-isolation", "--outdir",
               tmp / "dist", src)
    (sdist,), (wheel,) = (tmp / "dist").glob("*.tar.gz"), (tmp / "dist").glob("*.whl")
    _run(*_venv(tmp / "venv"), "install", wheel)
    return Installed(tmp / "venv", tmp / "builder", builder_pip, src, sdist, wheel, log)


def test_sdist_and_wheel_carry_the_shipped_data(installed):
    with tarfile.open(installed.sdist) as tar:
        sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"boards/qemu-arm64.toml", "recipes/busybox.toml", "recipes/gateway/web.toml",
            "overlays/busybox-base/etc/init.d/rcS", "qemu/checks.toml", "setup.py"} <= sdist
    with zipfile.ZipFile(installed.wheel) as whl:
        modes = {i.filename: i.external_attr >> 16 for i in whl.infolist()}
    data = "lxembed/_data/"
    assert {f"{data}boards/qemu-arm64.toml", f"{data}recipes/gateway/web.toml",
            f"{data}qemu/checks.toml", "lxembed/init/lxinit.py"} <= set(modes)
    # An overlay file's executable bit decides its mode in images: it must survive packaging.
    assert modes[f"{data}overlays/busybox-base/etc/init.d/rcS"] & 0o111
    assert not modes[f"{data}overlays/busybox-base/etc/profile"] & 0o111
    assert "project.license" not in installed.build_log  # the deprecated table form is gone


def test_installed_lxembed_knows_the_shipped_boards_and_recipes(installed, tmp_path):
    listed = json.loads(installed.run("list", "--json", cwd=tmp_path).stdout)
    (search,) = listed["search"]
    shipped = Path(search["dir"])
    assert search["from"] == "shipped" and shipped.name == "_data"
    assert installed.venv in shipped.parents  # the installed copy, not the checkout
    assert {"qemu-arm64", "qemu-mipsel", "rpi3-arm64"} <= set(listed["boards"])
    assert {"busybox", "gateway", "container-busybox"} <= set(listed["recipes"])
    result = installed.run("show", "-b", "qemu-arm64", "-r", "busybox", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["board"]["file"] == str(shipped / "boards/qemu-arm64.toml")
    assert shown["recipe"]["overlays"] == ["busybox-base", "udhcpc"]


def test_installed_lxembed_builds_and_tests_a_new_product(installed, tmp_path):
    out = tmp_path / "out"
    result = installed.run("build", "-b", "qemu-arm64", "-r", "busybox", "-f", "tar", "-o",
                           str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with tarfile.open(out / "rootfs.tar") as tar:
        rcs, profile = tar.getmember("./etc/init.d/rcS"), tar.getmember("./etc/profile")
    assert stat.S_IMODE(rcs.mode) == 0o755 and stat.S_IMODE(profile.mode) == 0o644
    assert installed.run("new", "gizmo", cwd=tmp_path).returncode == 0
    result = installed.run("test", "--user", "-b", "qemu-arm64", "-r", "gizmo",
                           cwd=tmp_path / "gizmo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gizmo-release" in result.stdout


def test_an_editable_install_reads_the_checkouts_own_directories(installed, tmp_path):
    """The build step copies nothing for an editable install: boards/ and the rest are read
    where they are kept, so an edit there is seen at once. (Into the builder venv: it has the
    backend already.)"""
    _run(*installed.builder_pip, "install", "--no-deps", "--no-build-isolation", "-e",
         installed.src)
    where = _run(installed.builder / "bin/python", "-c",
                 "from lxembed.config.product import shipped_dir; print(shipped_dir())",
                 cwd=tmp_path)
    assert where.strip() == str(installed.src)
    assert not (installed.src / "lxembed/_data").exists()
