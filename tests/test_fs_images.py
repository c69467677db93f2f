"""Filesystem images (ext4, squashfs options, jffs2, ubi) from a small tree, read back by each
filesystem's own tools; the slow tests build the busybox recipe for real boards."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from conftest import run_lxembed

from lxembed.errors import UserError
from lxembed.tree import BLOCK, CHAR, FIFO, HARDLINK, Entry, RootfsTree
from lxembed.writers.ext4 import Ext4Options, write_ext4
from lxembed.writers.output import write_formats
from lxembed.writers.squashfs import SquashfsOptions

EPOCH = 1704067200


def sample_tree() -> RootfsTree:
    """Every entry type, owners and modes that differ from what a host file would have."""
    tree = RootfsTree()
    tree.write("/bin/busybox", b"\x7fELF fake" * 100, mode=0o755, mtime=1600000000)
    tree.symlink("/bin/sh", "busybox")
    tree.add("/bin/ash", Entry(HARDLINK, 0o755, target="/bin/busybox"))
    tree.add("/dev/console", Entry(CHAR, 0o600, major=5, minor=1))
    tree.add("/dev/mmcblk0", Entry(BLOCK, 0o660, gid=6, major=179, minor=0))
    tree.add("/run/initctl", Entry(FIFO, 0o600))
    tree.write("/etc/shadow", b"root:*:1::::::\n", mode=0o640, gid=42)
    tree.write("/usr/bin/su", b"su", mode=0o4755)
    tree.write("/home/app/a file", b"data" * 3000, uid=1000, gid=1000, mode=0o600)
    tree.mkdir("/home/app/cache", mode=0o700, uid=1000, gid=1000)
    tree.symlink("/usr/lib/long", "x" * 80)  # too long for an inline (fast) symlink
    tree.clamp_mtimes(EPOCH)
    return tree


def debugfs(image, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True,
                          text=True, check=True).stdout


def ext4_ls(image, directory: str) -> dict:
    """name -> (mode octal string, uid, gid) from debugfs's `ls -l`."""
    out = {}
    for line in debugfs(image, f'ls -l "{directory}"').splitlines():
        m = re.match(r"\s*\d+\s+(\d+)\s+\(\d+\)\s+(\d+)\s+(\d+)\s+\S+\s+.*\d\d:\d\d (.+)$", line)
        if m:
            out[m.group(4)] = (m.group(1), int(m.group(2)), int(m.group(3)))
    return out


# -- ext4 -------------------------------------------------------------------------------------

def test_ext4_owners_modes_nodes_and_links_come_from_the_tree(tmp_path):
    art = write_formats(sample_tree(), tmp_path, ["ext4"])[0]
    assert art.format == "ext4" and art.bytes % (1 << 20) == 0
    dev = ext4_ls(art.path, "/dev")
    assert dev["console"] == ("20600", 0, 0)
    assert dev["mmcblk0"] == ("60660", 0, 6)
    assert "Device major/minor number: 179:00" in debugfs(art.path, "stat /dev/mmcblk0")
    assert ext4_ls(art.path, "/run")["initctl"][0] == "10600"
    assert ext4_ls(art.path, "/usr/bin")["su"] == ("104755", 0, 0)
    assert ext4_ls(art.path, "/etc")["shadow"] == ("100640", 0, 42)
    home = ext4_ls(art.path, "/home/app")
    assert home["a file"] == ("100600", 1000, 1000) and home["cache"] == ("40700", 1000, 1000)
    assert 'Fast link dest: "busybox"' in debugfs(art.path, "stat /bin/sh")
    assert debugfs(art.path, "stat /usr/lib/long").count("EXTENTS") == 1  # a block symlink
    stat = debugfs(art.path, "stat /bin/busybox")
    assert "mtime: 0x5f5e1000:00000000" in stat and "ctime: 0x5f5e1000:00000000" in stat
    assert re.search(r"Links: 2\b", stat)  # /bin/ash is the same inode
    assert debugfs(art.path, 'cat "/home/app/a file"') == "data" * 3000
    fsck = subprocess.run(["e2fsck", "-fn", art.path], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout


def test_ext4_is_bit_identical_whatever_the_host_clock_and_environment(tmp_path, monkeypatch):
    tree = sample_tree()
    first = write_formats(tree, tmp_path / "a", ["ext4"])[0]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1")
    monkeypatch.setenv("E2FSPROGS_FAKE_TIME", "12345")
    monkeypatch.setenv("MKE2FS_CONFIG", "/nonexistent")
    again = write_formats(tree, tmp_path / "b", ["ext4"])[0]
    assert first.sha256 == again.sha256


def test_ext4_uuid_follows_the_identity_and_epoch(tmp_path):
    def uuid_of(identity: str, epoch: int) -> str:
        path = tmp_path / f"{identity}-{epoch}.img"
        with open(path, "wb") as fh:
            write_ext4(sample_tree(), fh, epoch, identity)
        return re.search(r"Filesystem UUID:\s+(\S+)", subprocess.run(
            ["dumpe2fs", "-h", str(path)], capture_output=True, text=True).stdout).group(1)
    assert uuid_of("a", EPOCH) == uuid_of("a", EPOCH)
    assert uuid_of("a", EPOCH) != uuid_of("b", EPOCH) != uuid_of("b", EPOCH + 1)


def test_ext4_fixed_size_and_a_tree_that_does_not_fit(tmp_path):
    with open(tmp_path / "fixed", "wb") as fh:
        write_ext4(sample_tree(), fh, EPOCH, "x", Ext4Options(size=8 << 20))
    assert (tmp_path / "fixed").stat().st_size == 8 << 20
    tree = sample_tree()
    tree.write("/big", b"\1" * (3 << 20))
    with pytest.raises(UserError, match="does not fit in 2097152 bytes"):
        with open(tmp_path / "small", "wb") as fh:
            write_ext4(tree, fh, EPOCH, "x", Ext4Options(size=2 << 20))


def test_ext4_headroom_is_free_space(tmp_path):
    tree = sample_tree()
    tree.write("/big", b"\1" * (8 << 20))
    sizes = {}
    for headroom in ("0%", "100%", "16MiB"):
        with open(tmp_path / headroom, "wb") as fh:
            write_ext4(tree, fh, EPOCH, "x", Ext4Options(headroom=headroom, journal=False))
        sizes[headroom] = (tmp_path / headroom).stat().st_size
    assert sizes["0%"] < sizes["100%"] - (7 << 20)
    assert sizes["16MiB"] >= sizes["0%"] + (15 << 20)
    with pytest.raises(UserError, match="headroom"):
        write_ext4(tree, open(tmp_path / "bad", "wb"), EPOCH, "x", Ext4Options(headroom="lots"))


def test_recipe_sizes_are_read_and_bad_ones_name_file_and_line(tmp_path):
    from lxembed.config import load_recipe
    good = tmp_path / "good.toml"
    good.write_text('[ext4]\nsize = "64MiB"\n[squashfs]\nblock_size = "128K"\n')
    recipe = load_recipe(str(good))
    assert recipe.ext4["size"] == 64 << 20 and recipe.squashfs["block_size"] == 128 << 10
    bad = tmp_path / "bad.toml"
    bad.write_text('description = "x"\n[ext4]\nsize = "64MB"\n')
    with pytest.raises(UserError, match=r"bad.toml:3: \[ext4\] size: '64MB' is not a size"):
        load_recipe(str(bad))


# -- squashfs ---------------------------------------------------------------------------------

def test_squashfs_with_source_date_epoch_in_the_environment(tmp_path, monkeypatch):
    # mksquashfs refuses SOURCE_DATE_EPOCH together with -mkfs-time; reproducible-build
    # systems always set it.
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    art = write_formats(sample_tree(), tmp_path / "a", ["squashfs"])[0]
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert write_formats(sample_tree(), tmp_path / "b", ["squashfs"])[0].sha256 == art.sha256


def test_squashfs_compressor_and_block_size(tmp_path):
    from lxembed.writers.squashfs import write_squashfs
    path = tmp_path / "img"
    with open(path, "wb") as fh:
        write_squashfs(sample_tree(), fh, EPOCH, SquashfsOptions("xz", 64 * 1024))
    stat = subprocess.run(["unsquashfs", "-s", str(path)], capture_output=True, text=True,
                          check=True).stdout
    assert "Compression xz" in stat and "Block size 65536" in stat
    listing = subprocess.run(["unsquashfs", "-lln", str(path)], capture_output=True, text=True,
                             check=True).stdout
    assert re.search(r"brw-rw---- 0/6 .*179,\s+0 .*/dev/mmcblk0", listing)


@pytest.mark.parametrize("table,message", [
    ({"block_size": 3000}, "power of two"),
    ({"compressor": "xz", "level": 3}, "takes no level"),
])
def test_squashfs_options_are_checked(table, message):
    with pytest.raises(UserError, match=message):
        SquashfsOptions.from_recipe(table)


# -- real images (slow) -----------------------------------------------------------------------

def _build(board: str, dest, fmt: str, env=None) -> dict:
    result = run_lxembed("build", "--board", board, "--recipe", "busybox", "--output", str(dest),
                         "--format", fmt, "--json", check=True, env=env)
    return {a["format"]: a for a in json.loads(result.stdout)["artifacts"]}


@pytest.mark.slow
@pytest.mark.parametrize("board", ["qemu-arm64", "qemu-mipsel"])
def test_busybox_ext4_matches_its_manifest_and_is_reproducible(tmp_path, board):
    import os
    first = _build(board, tmp_path / "a", "ext4")
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
    again = _build(board, tmp_path / "b", "ext4", env)
    third = _build(board, tmp_path / "c", "ext4", env)
    assert again["ext4"]["sha256"] == third["ext4"]["sha256"]
    assert first["ext4"]["bytes"] == again["ext4"]["bytes"]
    image = first["ext4"]["path"]
    assert subprocess.run(["e2fsck", "-fn", image], capture_output=True).returncode == 0
    manifest = json.loads((tmp_path / "a/manifest.json").read_text())
    entries = {e["path"]: e for e in manifest["entries"]}
    dev = ext4_ls(image, "/dev")
    for name in ("console", "null", "tty"):
        mode, uid, gid = dev[name]
        entry = entries[f"/dev/{name}"]
        assert int(mode, 8) & 0o7777 == int(entry["mode"], 8) & 0o7777
        assert f"{uid}:{gid}" == entry["owner"]
    assert "Fast link dest: \"/bin/busybox\"" in debugfs(image, "stat /bin/sh")
