"""LXC and Incus images (`lxc-image`): refusals (quick); then container-busybox built twice
(byte-identical), its Incus metadata checked against Incus's documented image format, and
`lxc-create -t local` making a container from it that starts, is ready, stops cleanly and is
destroyed, all under a private lxcpath."""

from __future__ import annotations

import io
import lzma
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import HOST_BOARD, build_cli, wait_for

from lxembed.arch import ARCHES
from lxembed.config import load_plan
from lxembed.pipeline import build_image

# Incus's architecture names (shared/osarch: the names, not the aliases, which Incus maps to
# them) and the moments a template may run (doc/reference/image_format.md).
INCUS_ARCHES = {"i686", "x86_64", "armv6l", "armv7l", "armv8l", "aarch64", "ppc", "ppc64",
                "ppc64le", "s390x", "mips", "mips64", "riscv32", "riscv64", "loongarch64"}
INCUS_WHEN = {"create", "copy", "start"}



@pytest.mark.parametrize("recipe,line,message", [
    ('hostname = "b"\n[container]\nmode = "bind-host"\ninit = "python"\n', 3,
     "an LXC image of a bind-host container would need its host's /usr"),
    ('hostname = "b"\npackages = ["busybox-static"]\ninit = "busybox"\n[container]\n'
     'lxc_version = "2.0"\n', 5, "lxc-image is for LXC 3.0 and later"),
])
def test_bad_input_one_line_nothing_written(tmp_path, capsys, recipe, line, message):
    code, out = build_cli(tmp_path, recipe, fmt="lxc-image")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[0].startswith(f"lxembed: error: {tmp_path}/bad.toml:{line}: "), err
    assert message in err[0], err
    assert all(e.startswith("lxembed: hint: ") for e in err[1:]), err
    assert not out.exists()


def test_every_architecture_has_an_incus_name():
    assert {a.debian: a.incus for a in ARCHES.values()} == {
        "amd64": "x86_64", "i386": "i686", "arm64": "aarch64", "armhf": "armv7l",
        "armel": "armv6l", "mipsel": "mips", "mips64el": "mips64", "riscv64": "riscv64"}
    assert {a.incus for a in ARCHES.values()} <= INCUS_ARCHES


def _members(path: Path, root_owned: bool = True) -> dict:
    """{name without ./: bytes or None for a directory} of a .tar.xz; every entry dated
    SOURCE_DATE_EPOCH and (`root_owned`: lxembed's own files, not the tree's) owned by 0:0."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress(path.read_bytes()))) as tar:
        for m in tar.getmembers():
            assert m.mtime == EPOCH, m.name
            assert not root_owned or (m.uid, m.gid) == (0, 0), m.name
            name = m.name.removeprefix("./")
            out[name] = tar.extractfile(m).read() if m.isfile() else None
    return out


EPOCH = load_plan("qemu-x86_64", "container-busybox").epoch


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """container-busybox's lxc-image, built twice: (first lxc-image dir, second)."""
    plan = load_plan("qemu-x86_64", "container-busybox")
    base = tmp_path_factory.mktemp("lxcimg")
    for out in ("a", "b"):
        build_image(plan, base / out, ["lxc-image"])
    return base / "a" / "lxc-image", base / "b" / "lxc-image"


@pytest.mark.slow
def test_image_is_byte_identical_and_says_what_lxc_create_and_incus_read(image):
    a, b = image
    assert sorted(p.name for p in a.iterdir()) == ["incus.tar.xz", "meta.tar.xz", "rootfs.tar.xz"]
    for part in a.iterdir():
        assert part.read_bytes() == (b / part.name).read_bytes(), part.name

    meta = _members(a / "meta.tar.xz")
    config = meta["config"].decode()
    # lxc-create and its local template write these: the image must not name build paths.
    assert "lxc.rootfs.path" not in config and "lxc.rootfs.managed" not in config
    assert "lxc.uts.name" not in config
    assert config.startswith("# LXC_NAME: ") and "lxc.init.cmd = /sbin/init" in config
    assert meta["templates"].decode().split() == ["/etc/hostname", "/etc/hosts"]
    rootfs = _members(a / "rootfs.tar.xz", root_owned=False)
    assert rootfs["etc/hostname"] == b"LXC_NAME\n"
    assert b"\tLXC_NAME" in rootfs["etc/hosts"]

    incus = _members(a / "incus.tar.xz")
    doc = yaml.safe_load(incus["metadata.yaml"])
    assert doc["architecture"] == "x86_64" and doc["architecture"] in INCUS_ARCHES
    assert doc["creation_date"] == EPOCH and isinstance(doc["creation_date"], int)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in doc["properties"].items())
    assert {"os", "release", "name", "description"} <= set(doc["properties"])
    assert set(doc["templates"]) == {"/etc/hostname", "/etc/hosts"}
    for path, tpl in doc["templates"].items():
        assert set(tpl["when"]) <= INCUS_WHEN and isinstance(tpl["create_only"], bool)
        assert incus[f"templates/{tpl['template']}"].count(b"{{ instance.name }}") == 1, path


def _lxc(*args: str, lxcpath: Path, name: str, check: bool = True) -> str:
    proc = subprocess.run([args[0], "-P", str(lxcpath), "-n", name, *args[1:]],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert not check or proc.returncode == 0, f"{args}: {proc.stdout}{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
@pytest.mark.lxc
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("lxc-create"),
                    reason="needs root and lxc")
def test_lxc_create_local_makes_a_container_that_starts_and_stops(image, tmp_path):
    lxcpath, name = tmp_path / "lxc", "lxembed-img"
    lxcpath.mkdir()
    # An empty initial config: /etc/lxc/default.conf would add a veth on lxcbr0 to the image's
    # own network (lxc-local keeps both), and this test needs no bridge.
    console = tmp_path / "console"
    try:
        out = _lxc("lxc-create", "-t", "local", "-f", "/dev/null", "--",
                   "--metadata", str(image[0] / "meta.tar.xz"),
                   "--fstree", str(image[0] / "rootfs.tar.xz"), lxcpath=lxcpath, name=name)
        assert "ready when /run/lxembed/ready exists" in out  # the create-message
        assert (lxcpath / name / "rootfs" / "etc" / "hostname").read_text() == f"{name}\n"
        _lxc("lxc-start", "-d", "-L", str(console), "-o", str(tmp_path / "log"),
             lxcpath=lxcpath, name=name)
        text = lambda: console.read_text(errors="replace") if console.exists() else ""  # noqa: E731
        assert wait_for(lambda: "lxembed: ready" in text(), 10), text()
        assert _lxc("lxc-attach", "--", "hostname", lxcpath=lxcpath, name=name).strip() == name
        start = time.monotonic()
        _lxc("lxc-stop", "-t", "10", lxcpath=lxcpath, name=name)  # the config's SIGPWR
        assert time.monotonic() - start < 5  # busybox init pauses 2 x 1 s; a kill takes 10
        assert _lxc("lxc-info", "-sH", lxcpath=lxcpath, name=name).strip() == "STOPPED"
        _lxc("lxc-destroy", lxcpath=lxcpath, name=name)
        assert not (lxcpath / name).exists()  # lxc-create's rootfs is lxc-destroy's to remove
    finally:
        _lxc("lxc-stop", "-k", lxcpath=lxcpath, name=name, check=False)
        _lxc("lxc-destroy", lxcpath=lxcpath, name=name, check=False)


def test_config_keeps_settings_and_names_only_the_hostname(tmp_path):
    """Only what lxc-create writes is left out (a read-only root stays); the hostname is
    replaced as a whole word, not inside another name."""
    from lxembed.config import Plan
    from lxembed.config.loader import load_board, load_recipe
    from lxembed.containers import container_spec
    from lxembed.containers.lxc_image import lxc_image
    from lxembed.tree import RootfsTree

    (tmp_path / "b.toml").write_text(HOST_BOARD)
    (tmp_path / "r.toml").write_text('hostname = "img"\npackages = ["busybox-static"]\n'
                                     'init = "busybox"\n[container]\nreadonly = true\n')
    plan = Plan(load_board(str(tmp_path / "b.toml")), load_recipe(str(tmp_path / "r.toml")),
                EPOCH)
    tree = RootfsTree()
    tree.write("/etc/hostname", b"img\n")
    tree.write("/etc/hosts", b"127.0.1.1\timg img.lan\n10.0.0.9\timg-backup\n")
    image = lxc_image(plan, container_spec(plan), tree)
    config = image.meta["config"].decode()
    assert "lxc.rootfs.options = ro" in config and "lxc.rootfs.path" not in config
    assert image.rootfs.read("/etc/hosts") == b"127.0.1.1\tLXC_NAME img.lan\n10.0.0.9\timg-backup\n"
    assert tree.read("/etc/hostname") == b"img\n"  # the container's tree is left as it was
    assert image.incus["templates/hostname.tpl"] == b"{{ instance.name }}\n"
