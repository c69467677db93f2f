"""Several Debian suites side by side: trixie boards next to the bookworm ones, each suite's
own apt state, kernel, Python and LXC; merged /usr in trixie images; the suite checks."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import run_lxembed

from lxembed.arch import get_arch
from lxembed.cli.build import format_table
from lxembed.config import Plan, load_board, load_recipe
from lxembed.containers.bundle import CONTAINER_FORMATS
from lxembed.containers.lxc_config import lxc_config
from lxembed.containers.lxc_keys import TABLES, knows
from lxembed.containers.spec import container_spec
from lxembed.paths import cache_dir
from lxembed.suites import SUITES, empty_root, newest_suite
from lxembed.tree import DIR, SYMLINK
from lxembed.writers.output import known_formats

TRIXIE_BOARDS = ("qemu-arm64-trixie", "qemu-armhf-trixie", "qemu-x86_64-trixie")


# -- which suite a board is on ---------------------------------------------------------------
def test_trixie_boards_are_their_bookworm_boards_on_trixie():
    for name in TRIXIE_BOARDS:
        trixie, bookworm = load_board(name), load_board(name[:-len("-trixie")])
        assert (trixie.suite, bookworm.suite) == ("trixie", "bookworm")
        assert trixie.arch is bookworm.arch
        assert trixie.settings["qemu"] == bookworm.settings["qemu"]


def test_newest_suite_is_trixie_except_for_mips_and_i386():
    assert {a: newest_suite(a).name for a in ("amd64", "arm64", "armhf", "armel", "i386",
                                               "mipsel", "mips64el")} == {
        "amd64": "trixie", "arm64": "trixie", "armhf": "trixie", "armel": "trixie",
        "i386": "bookworm", "mipsel": "bookworm", "mips64el": "bookworm"}


@pytest.mark.parametrize("board, message", [
    ('arch = "mipsel"\nsuite = "trixie"\n', "b.toml:2: Debian trixie has no mipsel"),
    ('arch = "i386"\n\nsuite = "trixie"\n', "b.toml:3: Debian trixie has no i386"),
    ('arch = "arm64"\nsuite = "sid"\n', "b.toml:2: unknown Debian suite 'sid' (known: "
                                        "bookworm, trixie)"),
])
def test_a_suite_without_the_board_arch_is_one_error(tmp_path, board, message):
    (tmp_path / "b.toml").write_text(board)
    out = tmp_path / "out"
    result = run_lxembed("build", "-b", str(tmp_path / "b.toml"), "-r", "busybox", "-o", str(out))
    assert result.returncode == 2, result.stderr
    errors = result.stderr.splitlines()
    assert message in errors[0] and "Traceback" not in result.stderr, result.stderr
    assert all(line.startswith("lxembed: hint:") for line in errors[1:]), errors
    assert not out.exists()


# -- merged /usr -----------------------------------------------------------------------------
def test_a_trixie_tree_has_merged_usr_and_keeps_it():
    tree = empty_root("trixie", get_arch("amd64"))
    assert {p: e.target for p, e in tree if e.type == SYMLINK} == {
        "/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64"}
    tree.write("/bin/busybox", b"x", mode=0o755)  # a package's /bin: the same directory
    assert tree.get("/usr/bin/busybox") is tree.get("/bin/busybox") is not None
    assert tree.get("/bin").type == SYMLINK  # get() follows the directories, not the last
    tree.mkdir("/lib")  # a package's directory entry keeps the link (dpkg's rule)
    assert tree.get("/lib").type == SYMLINK and tree.get("/usr/lib").type == DIR
    assert "/bin" not in {p for p, _ in empty_root("trixie", get_arch("arm64")) if "64" in p}
    assert [p for p, _ in empty_root("bookworm", get_arch("amd64"))] == ["/"]


# -- the tables behind --help and list -------------------------------------------------------
def test_build_help_and_list_show_every_format_and_board_with_its_suite():
    help_text = run_lxembed("build", "--help", check=True).stdout
    listed = help_text.split("formats (docs/formats.md):")[1].replace(",", " ").split()
    assert set(known_formats()) | set(CONTAINER_FORMATS) <= set(listed), listed
    shown = json.loads(run_lxembed("list", "--json", check=True).stdout)
    assert shown["formats"] == dict(format_table())
    assert {n: b["suite"] for n, b in shown["boards"].items() if n.endswith("-trixie")} == {
        n: "trixie" for n in TRIXIE_BOARDS}
    assert shown["boards"]["qemu-mipsel"]["suite"] == "bookworm"
    assert set(shown["suites"]) == set(SUITES)
    text = run_lxembed("list", check=True).stdout
    assert re.search(r"\n  qemu-arm64-trixie +arm64 +trixie +qemu ", text), text


# -- LXC 6.0 ---------------------------------------------------------------------------------
def test_lxc_6_has_its_own_table_read_from_its_source():
    # v6.0.0 ... v6.0.6's confile.c: the same keys as 5.0's, none added or removed.
    assert TABLES[(6, 0)] == TABLES[(5, 0)]
    assert knows((6, 0), "lxc.net.0.veth.vlan.tagged.id") and knows((6, 0), "lxc.time.offset.boot")
    assert not knows((6, 0), "lxc.utsname") and not knows((6, 0), "lxc.network.0.type")


def test_a_container_is_written_for_its_suite_lxc_unless_the_recipe_says(tmp_path):
    recipe = tmp_path / "c.toml"
    for suite, pinned, version in (("bookworm", "", "5.0"), ("trixie", "", "6.0"),
                                   ("trixie", 'lxc_version = "4.0"\n', "4.0")):
        (tmp_path / "b.toml").write_text(f'arch = "amd64"\nsuite = "{suite}"\n')
        recipe.write_text('init = "busybox"\n[container]\nmode = "self-contained"\n' + pinned)
        spec = container_spec(Plan(load_board(str(tmp_path / "b.toml")),
                                   load_recipe(str(recipe)), 0))
        assert ".".join(map(str, spec.lxc_version)) == version
        assert f"# keys for LXC {version}" in lxc_config(spec, "/x/rootfs")


# -- images on trixie ------------------------------------------------------------------------
def _build(board: str, recipe: str, out: Path, fmt: str = "cpio.zst", env=None) -> dict:
    result = run_lxembed("-q", "build", "-b", board, "-r", recipe, "-o", str(out), "-f", fmt,
                         "--json", env=env)
    assert result.returncode == 0, result.stderr
    return {a["format"]: a["sha256"] for a in json.loads(result.stdout)["artifacts"]}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["busybox", "busybox-python"])
def test_trixie_images_are_byte_identical_and_pass_their_checks(tmp_path, recipe):
    board = "qemu-arm64-trixie"
    first = _build(board, recipe, tmp_path / "a")
    # The bytecode of Python 3.13 (compiled by the image's own interpreter) made again too.
    shutil.rmtree(cache_dir() / "python-bytecode", ignore_errors=True)
    assert _build(board, recipe, tmp_path / "b") == first
    manifest = {e["path"]: e for e in json.loads((tmp_path / "a/manifest.json").read_text())[
        "entries"]}
    assert manifest["/bin"]["type"] == "symlink" and manifest["/usr/bin/busybox"]
    if recipe == "busybox-python":
        assert "/usr/bin/python3.13" in manifest and "/usr/lib/lxembed/lxinit.pyc" in manifest
        assert not [p for p in manifest if "python3.11" in p]
    for mode in ([], ["--user"]):
        result = run_lxembed("test", "-b", board, "-r", recipe, "-o", str(tmp_path / "a"), *mode)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "checks passed" in result.stdout + result.stderr


@pytest.mark.slow
def test_a_package_trixie_lacks_is_one_error_at_its_line(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('base = "busybox"\ndescription = "x"\npackages = ["python3.11-minimal"]\n')
    out = tmp_path / "out"
    result = run_lxembed("build", "-b", "qemu-arm64-trixie", "-r", str(recipe), "-o", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[0] == (
        f"lxembed: error: {recipe}:3: unknown package 'python3.11-minimal' in Debian trixie "
        "for arm64"), result.stderr
    assert not out.exists()
    # The same recipe on bookworm has it.
    assert run_lxembed("-q", "build", "-b", "qemu-arm64", "-r", str(recipe), "-o",
                       str(out)).returncode == 0


@pytest.mark.slow
def test_trixie_formats(tmp_path):
    """Every image and container format on trixie, twice: byte for byte the same; the ext4
    root and the FIT through U-Boot boot."""
    for recipe, formats in (
            # sdcard: rpi3 only; firmware: a recipe with [firmware] (tests/test_firmware.py)
            ("busybox", ",".join(f for f in known_formats() if f not in ("sdcard", "firmware"))),
            ("container-busybox", ",".join(CONTAINER_FORMATS))):
        # The same output directory: an LXC config and a libvirt domain name their rootfs.
        first = _build("qemu-arm64-trixie", recipe, tmp_path / recipe, formats)
        assert len(first) > len(formats.split(","))  # + the manifests
        assert _build("qemu-arm64-trixie", recipe, tmp_path / recipe, formats) == first
    for how in (["--root", "ext4"], ["--boot", "uboot"]):  # the disk's, U-Boot's FIT
        result = run_lxembed("test", "-b", "qemu-arm64-trixie", "-r", "busybox", *how,
                             "-o", str(tmp_path / how[1]))
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_trixie_download_cache_repairs_itself(tmp_path):
    """A damaged trixie .deb in the shared cache is fetched again, and the image is the same."""
    env = {**__import__("os").environ, "LXEMBED_CACHE": str(tmp_path / "cache")}
    shutil.copytree(cache_dir() / "apt" / "trixie-arm64", tmp_path / "cache/apt/trixie-arm64",
                    symlinks=True)
    first = _build("qemu-arm64-trixie", "busybox", tmp_path / "a", env=env)
    (deb,) = (tmp_path / "cache/apt/trixie-arm64/cache/archives").glob("busybox-static_*.deb")
    whole = hashlib.sha256(deb.read_bytes()).hexdigest()
    deb.write_bytes(deb.read_bytes()[:1000])
    shutil.rmtree(tmp_path / "cache/unpacked")
    result = run_lxembed("-q", "build", "-b", "qemu-arm64-trixie", "-r", "busybox", "-o",
                         str(tmp_path / "b"), "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert "was damaged in the download cache" in result.stderr, result.stderr
    assert hashlib.sha256(deb.read_bytes()).hexdigest() == whole
    assert {a["format"]: a["sha256"] for a in json.loads(result.stdout)["artifacts"]} == first


@pytest.mark.parametrize("args, suite", [
    ((), "trixie"),  # qemu-arm64, a bookworm board, copied onto the newest suite with arm64
    (("-b", "qemu-mipsel"), "bookworm"),  # trixie has no mipsel
    (("-b", "qemu-i386"), "bookworm"),  # nor an i386 kernel
    (("--suite", "bookworm"), "bookworm"),
    (("-b", "qemu-arm64-trixie", "--suite", "bookworm"), "bookworm"),
])
def test_a_new_board_is_on_the_newest_suite_of_its_arch(tmp_path, args, suite):
    run_lxembed("new", "p", *args, cwd=tmp_path, check=True)
    board = load_board(str(tmp_path / "p/boards/p.toml"))
    assert board.suite == suite
    assert len(re.findall(r"(?m)^suite\s*=", board.path.read_text())) == 1
