"""Filesystem images (ext4, squashfs options, jffs2, ubi) from a small tree, read back by each
filesystem's own tools; the slow tests build the busybox recipe for real boards."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from conftest import ROOT, make_deb, run_lxembed

from lxembed.errors import UserError
from lxembed.tree import BLOCK, CHAR, FIFO, HARDLINK, Entry, RootfsTree
from lxembed.writers.ext4 import Ext4Options, write_ext4
from lxembed.writers.flash import FlashGeometry
from lxembed.writers.jffs2 import write_jffs2
from lxembed.writers.output import write_formats
from lxembed.writers.squashfs import SquashfsOptions

EPOCH = 1704067200


def _tool(name: str) -> str:
    """A console script of the test extras: beside this Python, on PATH or not."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


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


def test_dir_writes_a_hard_link_that_sorts_before_its_target(tmp_path):
    write_formats(sample_tree(), tmp_path, ["dir"])  # /bin/ash -> /bin/busybox
    ash, busybox = tmp_path / "rootfs/bin/ash", tmp_path / "rootfs/bin/busybox"
    assert ash.stat().st_ino == busybox.stat().st_ino


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


def test_ext4_takes_what_a_staged_directory_could_not_carry(tmp_path):
    """Owners past 65535, times past 2038, new-style device numbers, any byte in a name, a
    lost+found of the tree's own, a directory grown past its first blocks: all from the tree."""
    tree = sample_tree()
    odd = '/odd/a "quoted" \\ name\nwith a newline'
    tree.write(odd, b"odd", uid=70000, gid=80000, mode=0o640, mtime=3000000000)
    tree.add("/dev/big", Entry(CHAR, 0o620, uid=5, major=300, minor=70000))
    tree.mkdir("/lost+found", mode=0o700, uid=7)
    for i in range(600):  # 600 entries of 120 bytes: the directory needs ~18 blocks
        tree.write(f"/many/{i:03d}" + "n" * 100, b"%d" % i, mode=0o600)
    tree.add("/a/link", Entry(HARDLINK, 0o644, target="/many/599" + "n" * 100))
    tree.add("/a/link2", Entry(HARDLINK, 0o644, target="/a/link"))  # a link to a link
    paths = [tmp_path / "a.ext4", tmp_path / "b.ext4"]
    for path in paths:
        with open(path, "wb") as fh:
            write_ext4(tree, fh, 3100000000, "x")
    assert paths[0].read_bytes() == paths[1].read_bytes()
    image = paths[0]
    fsck = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout
    # debugfs reads one line per request: the name with a newline is reached by its inode.
    (ino,) = re.findall(r"^\s*(\d+) .*quoted\" \\x5c name\\x0awith a newline$",
                        debugfs(image, "ls -l /odd"), re.M)
    stat = debugfs(image, f"stat <{ino}>")
    assert re.search(r"User: 70000\s+Group: 80000", stat) and "Mode:  0640" in stat
    for field in ("ctime", "atime", "mtime", "crtime"):  # 3000000000: one epoch bit past 2038
        assert re.search(rf"\b{field}: 0xb2d05e00:00000001 -- .* 2065", stat), field
    assert debugfs(image, f"cat <{ino}>") == "odd"
    assert "Device major/minor number: 300:70000" in debugfs(image, "stat /dev/big")
    assert ext4_ls(image, "/dev")["big"] == ("20620", 5, 0)
    assert ext4_ls(image, "/")["lost+found"] == ("40700", 7, 0)
    many = ext4_ls(image, "/many")
    assert len(many) == 602 and many["123" + "n" * 100] == ("100600", 0, 0)
    assert debugfs(image, f'cat "/many/{42:03d}{"n" * 100}"') == "42"
    assert re.search(r"Links: 3\b", debugfs(image, "stat /a/link"))


@pytest.mark.parametrize("change,message", [
    (lambda t: t.write("/" + "a" * 256, b""), "a name longer than 255 bytes"),
    (lambda t: t.add("/l", Entry(HARDLINK, 0o644, target="/home/app")), "hard link /l"),
    (lambda t: t.symlink("/s", "x" * 5000), "/s: Invalid argument"),
    (lambda t: t.write("/lost+found", b""), "/lost+found is a directory"),
])
def test_ext4_refuses_what_ext4_cannot_hold_in_one_line(tmp_path, change, message):
    tree = sample_tree()
    change(tree)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        with open(tmp_path / "img", "wb") as fh:
            write_ext4(tree, fh, EPOCH, "x")
    assert "\n" not in str(err.value)


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


def test_an_ext4_too_small_is_one_line_and_writes_nothing(tmp_path):
    """From the command line: exit 2, one error line, no output directory (a local .deb and a
    hardware board: no network)."""
    make_deb(tmp_path / "data.deb", [("./opt/", "dir", None),
                                     ("./opt/blob", "file", bytes(range(256)) * 8192)])
    for size in ("1MiB", "64KiB"):  # the content does not fit; mke2fs cannot even start
        (tmp_path / "r.toml").write_text(f'description = "x"\ndebs = ["data.deb"]\n'
                                         f'[ext4]\nsize = "{size}"\n')
        result = subprocess.run([sys.executable, "-m", "lxembed", "build", "-b", "mt7621-router",
                                 "-r", "r.toml", "-o", "out", "-f", "ext4"], capture_output=True,
                                text=True, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("lxembed: error: ")]
        assert len(errors) == 1 and "ext4: the tree does not fit in" in errors[0], result.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data.deb", "r.toml"]


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


def test_ext4_block_size_is_checked():
    with pytest.raises(UserError, match="block_size: 512 is not 1024, 2048 or 4096"):
        Ext4Options.from_recipe({"block_size": 512})
    assert Ext4Options.from_recipe({"block_size": 1024}).block_size == 1024


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


# -- jffs2 and ubi ----------------------------------------------------------------------------

NOR = FlashGeometry("nor", 64 * 1024)
NAND = FlashGeometry("nand", 128 * 1024, 2048)


def _write(tmp_path, name: str, writer) -> bytes:
    path = tmp_path / name
    with open(path, "wb") as fh:
        writer(fh)
    return path


def jffs2_inodes(image: bytes) -> dict:
    """path -> (st_mode, uid, gid, mtime, ctime) from the image's dirent and inode nodes."""
    names, inodes, off = {1: "/"}, {}, 0
    while off + 12 <= len(image):
        magic, kind, length = struct.unpack_from("<HHI", image, off)
        if magic != 0x1985:
            off += 4
            continue
        if kind == 0xE001:
            pino, _, ino, _, nsize = struct.unpack_from("<IIIIB", image, off + 12)
            name = image[off + 40:off + 40 + nsize].decode()
            names.setdefault(ino, names[pino].rstrip("/") + "/" + name)  # a hard link's first
        elif kind == 0xE002:
            ino, _, mode, uid, gid, _, atime, mtime, ctime = struct.unpack_from(
                "<IIIHHIIII", image, off + 12)
            inodes[ino] = (mode, uid, gid, mtime, ctime)
        off += (length + 3) & ~3
    return {names[ino]: value for ino, value in inodes.items()}


def test_jffs2_nodes_owners_modes_and_times_come_from_the_tree(tmp_path):
    path = _write(tmp_path, "img", lambda fh: write_jffs2(sample_tree(), fh, NOR, False))
    assert path.stat().st_size % NOR.erase_block == 0
    dump = subprocess.run(["jffs2dump", "-c", str(path)], capture_output=True, text=True)
    assert "Wrong" not in dump.stdout + dump.stderr  # every header and node CRC holds
    inodes = jffs2_inodes(path.read_bytes())
    assert inodes["/dev/console"][:3] == (0o20600, 0, 0)
    assert inodes["/dev/mmcblk0"][:3] == (0o60660, 0, 6)
    assert inodes["/home/app/cache"][:3] == (0o40700, 1000, 1000)
    assert inodes["/usr/bin/su"][0] == 0o104755
    assert inodes["/bin/sh"][0] == 0o120777
    assert inodes["/bin/ash"][3:] == (1600000000, 1600000000)  # a host ctime never gets in
    tree = sample_tree()
    assert all(v[3] == v[4] == tree.get(p).mtime for p, v in inodes.items() if p != "/bin/ash")
    assert "/bin/busybox" not in inodes  # the same inode as /bin/ash
    rebuilt = _write(tmp_path, "again", lambda fh: write_jffs2(sample_tree(), fh, NOR, False))
    assert rebuilt.read_bytes() == path.read_bytes()


def _ubifs_crcs_hold(image: bytes) -> int:
    """How many UBIFS nodes there are; asserts each one's CRC (the check mkfs.ubifs's own pass)."""
    count, off = 0, 0
    while off + 24 <= len(image):
        magic, crc, _, length = struct.unpack_from("<IIQI", image, off)
        if magic != 0x06101831 or off + length > len(image) or length < 24:
            off += 8
            continue
        assert zlib.crc32(image[off + 8:off + length]) ^ 0xFFFFFFFF == crc, hex(off)
        count += 1
        off += (length + 7) & ~7
    return count


def test_ubi_is_bit_identical_and_read_back_by_ubi_reader(tmp_path):
    from lxembed.writers.ubi import write_ubi
    first = _write(tmp_path, "a", lambda fh: write_ubi(sample_tree(), fh, NAND, "b/r", EPOCH))
    again = _write(tmp_path, "b", lambda fh: write_ubi(sample_tree(), fh, NAND, "b/r", EPOCH))
    other = _write(tmp_path, "c", lambda fh: write_ubi(sample_tree(), fh, NAND, "x/r", EPOCH))
    assert first.read_bytes() == again.read_bytes() != other.read_bytes()
    info = subprocess.run([_tool("ubireader_display_info"), str(first)], capture_output=True,
                          text=True, check=True).stdout
    assert "PEB Size: 131072" in info and "Min I/O: 2048" in info
    assert re.search(r"LEB Size: 126976", info)

    def listing(directory: str) -> dict:
        out = subprocess.run([_tool("ubireader_list_files"), "-P", directory, str(first)],
                             capture_output=True, text=True, check=True).stdout
        return {line.split()[-1]: line.split()[:4] for line in out.splitlines() if line.strip()}
    dev = listing("/dev")
    assert dev["console"] == ["20600", "1", "0", "0"] and dev["mmcblk0"] == ["60660", "1", "0", "6"]
    assert listing("/home/app")["cache"] == ["40700", "2", "1000", "1000"]
    assert listing("/usr/bin")["su"][0] == "104755"


def test_ubifs_nodes_keep_valid_crcs_after_the_rewrite(tmp_path):
    from lxembed.writers import ubi
    from lxembed.writers.flash import stage
    root = tmp_path / "root"
    root.mkdir()
    stage(sample_tree(), root)
    fs = tmp_path / "fs"
    subprocess.run(["mkfs.ubifs", "-r", str(root), "-m", "2048", "-e", "126976", "-c", "64",
                    "-o", str(fs)], check=True)
    raw = bytearray(fs.read_bytes())
    nodes = _ubifs_crcs_hold(bytes(raw))  # mkfs.ubifs's own CRCs: the check is the right one
    ubi.set_inodes_from_tree(raw, sample_tree(), b"\x11" * 16)
    assert _ubifs_crcs_hold(bytes(raw)) == nodes
    assert b"\x11" * 16 in raw[:4096] and raw != fs.read_bytes()


def test_flash_formats_need_the_board_geometry(tmp_path):
    with pytest.raises(UserError, match=r"no \[flash\] table"):
        write_formats(sample_tree(), tmp_path, ["jffs2"])
    with pytest.raises(UserError, match="powers of two"):
        FlashGeometry("nand", 100000, 2048).check("board")
    assert FlashGeometry("nor", 65536).leb_size == 65408
    assert FlashGeometry("nand", 131072, 2048, 512).leb_size == 129024


@pytest.mark.slow
@pytest.mark.parametrize("board", ["qemu-arm64", "qemu-mipsel"])
def test_busybox_flash_images_match_the_manifest_and_are_reproducible(tmp_path, board):
    import os
    first = _build(board, tmp_path / "a", "jffs2,ubi,squashfs")
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
    again = _build(board, tmp_path / "b", "jffs2,ubi,squashfs", env)
    third = _build(board, tmp_path / "c", "jffs2,ubi,squashfs", env)
    for fmt in ("jffs2", "ubi", "squashfs"):
        assert again[fmt]["sha256"] == third[fmt]["sha256"], fmt
        assert first[fmt]["bytes"] > 0
    manifest = json.loads((tmp_path / "b/manifest.json").read_text())
    entries = {e["path"]: e for e in manifest["entries"]}
    inodes = jffs2_inodes(open(again["jffs2"]["path"], "rb").read())
    dump = subprocess.run(["jffs2dump", "-c", again["jffs2"]["path"]], capture_output=True,
                          text=True)
    assert "Wrong" not in dump.stdout
    ubi_dev = subprocess.run([_tool("ubireader_list_files"), "-P", "/dev", again["ubi"]["path"]],
                             capture_output=True, text=True, check=True).stdout
    squash = subprocess.run(["unsquashfs", "-lln", again["squashfs"]["path"]],
                            capture_output=True, text=True, check=True).stdout
    for name in ("console", "null", "tty"):
        entry = entries[f"/dev/{name}"]
        major, minor = (int(n) for n in entry["device"].split(":"))
        mode, uid, gid, mtime, _ = inodes[f"/dev/{name}"]
        assert (mode & 0o7777, f"{uid}:{gid}") == (int(entry["mode"], 8) & 0o7777,
                                                  entry["owner"])
        assert mtime == EPOCH
        line = next(ln for ln in ubi_dev.splitlines() if ln.split()[-1] == name)
        assert int(line.split()[0], 8) & 0o7777 == int(entry["mode"], 8) & 0o7777
        assert re.search(rf"^c\S+ {entry['owner'].replace(':', '/')} +{major}, +{minor} .*"
                         rf"/dev/{name}$", squash, re.M)


# -- disk -------------------------------------------------------------------------------------

def test_disk_is_an_mbr_with_the_root_filesystem_at_one_mebibyte(tmp_path):
    tree = sample_tree()
    tree.write("/bin/busybox", b"\x7fELF static busybox", mode=0o755)
    first = write_formats(tree, tmp_path / "a", ["disk.ext4"])
    again = write_formats(tree, tmp_path / "b", ["disk.ext4"])
    assert [a.sha256 for a in first] == [a.sha256 for a in again]
    disk, initrd = (a.path for a in first[:2])
    table = json.loads(subprocess.run(["sfdisk", "--json", disk], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    assert table["label"] == "dos"
    (part,) = table["partitions"]
    assert part["start"] == 2048 and part["type"] == "83"
    root = tmp_path / "root.ext4"
    with open(disk, "rb") as src:
        src.seek(2048 * 512)
        root.write_bytes(src.read(part["size"] * 512))
    assert subprocess.run(["e2fsck", "-fn", str(root)], capture_output=True).returncode == 0
    assert ext4_ls(root, "/dev")["console"] == ("20600", 0, 0)
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=open(initrd, "rb").read(),
                             capture_output=True, check=True).stdout.decode()
    assert re.search(r"^-rwxr-xr-x .* init$", listing, re.M)
    assert re.search(r"^crw------- .* dev/console$", listing, re.M)
    init = subprocess.run(["cpio", "-i", "--to-stdout", "init"], input=open(initrd, "rb").read(),
                          capture_output=True, check=True).stdout.decode()
    assert "root=/dev/vda1 fstype=ext4" in init and "switch_root /newroot" in init


def test_disk_needs_busybox_for_its_initramfs(tmp_path):
    tree = sample_tree()
    tree.remove("/bin")
    with pytest.raises(UserError, match="no /bin/busybox"):
        write_formats(tree, tmp_path, ["disk.squashfs"])


@pytest.mark.slow
@pytest.mark.qemu
# qemu-riscv64: a merged-/usr (trixie) image, whose modules segment is under /usr/lib/modules.
@pytest.mark.parametrize("board", ["qemu-arm64", "qemu-x86_64", "qemu-riscv64"])
@pytest.mark.parametrize("root", ["ext4", "squashfs"])
def test_qemu_boards_boot_busybox_from_their_disk(tmp_path, board, root):
    result = run_lxembed("test", "--board", board, "--recipe", "busybox", "--root", root,
                         "--output", str(tmp_path), "--json")
    report = json.loads(result.stdout)
    assert report["ok"], result.stderr + (tmp_path / "console.log").read_text()[-3000:]
    assert report["checks"] and all(c["ok"] for c in report["checks"])
    log = (tmp_path / "console.log").read_text()
    assert "-drive file=" in log and f"rootfs.disk.{root}" in log


# -- sdcard -----------------------------------------------------------------------------------

def test_fat_boot_partition_is_reproducible_and_dated_by_the_epoch(tmp_path):
    from lxembed.writers.sdcard import write_fat
    files = {"config.txt": b"arm_64bit=1\n", "vmlinuz": b"\0" * 5000, "b.dtb": b"dtb"}
    write_fat(tmp_path / "a", files, 8 << 20, 0x0BADCAFE, EPOCH)
    write_fat(tmp_path / "b", dict(reversed(list(files.items()))), 8 << 20, 0x0BADCAFE, EPOCH)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    listing = subprocess.run(["mdir", "-i", str(tmp_path / "a"), "::/"], capture_output=True,
                             text=True, check=True, env={"MTOOLS_SKIP_CHECK": "1",
                                                         "PATH": "/usr/bin:/bin"}).stdout
    assert "Serial Number is 0BAD-CAFE" in listing
    assert re.search(r"config\s+txt\s+12 2024-01-01\s+0:00", listing)


@pytest.mark.slow
@pytest.mark.qemu
def test_rpi3_sd_card_boots_on_raspi3b(tmp_path):
    """The real board's image, tested in an emulator of that board."""
    first = _build("rpi3-arm64", tmp_path / "a", "sdcard")
    import os
    again = _build("rpi3-arm64", tmp_path / "b", "sdcard",
                   dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH)))
    assert again["sdcard"]["sha256"] == first["sdcard"]["sha256"]  # bit-identical
    card = first["sdcard"]["path"]
    size = first["sdcard"]["bytes"]
    assert size & (size - 1) == 0  # QEMU's SD card: a power of two
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
    boot = subprocess.run(["mdir", "-b", "-i", f"{card}@@1048576", "::/"], capture_output=True,
                          text=True, check=True, env=env).stdout.split()
    for name in ("bootcode.bin", "start.elf", "fixup.dat", "vmlinuz", "bcm2837-rpi-3-b.dtb",
                 "config.txt", "cmdline.txt", "initrd.img"):
        assert f"::/{name}" in boot, name
    parts = json.loads(subprocess.run(["sfdisk", "--json", card], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    assert [p["type"] for p in parts["partitions"]] == ["c", "83"]
    result = run_lxembed("test", "--board", "rpi3-arm64", "--recipe", "busybox", "--root",
                         "sdcard", "--image", card, "--output", str(tmp_path / "a"), "--json")
    report = json.loads(result.stdout)
    assert report["ok"], result.stderr
    names = {c["name"] for c in report["checks"]}
    assert "uname-arch" in names and "eth0-address" not in names  # no NIC on raspi3b


@pytest.mark.slow
@pytest.mark.qemu
def test_the_kernel_mounts_the_jffs2_and_ubi_images(tmp_path):
    """The node rewrite (times, owners, CRCs, the UBIFS UUID) as Linux reads it: each image is a
    virtio disk made an MTD device by block2mtd, then mounted (jffs2; ubi attached, ubifs)."""
    from lxembed.config import load_plan
    from lxembed.pipeline import build_image
    from lxembed.runners import Check
    from lxembed.runners.accel import choose_accel
    from lxembed.runners.qemu_system import (
        GuestRun,
        QemuSetup,
        check_guest,
        initramfs_with_modules,
    )
    from lxembed.sources.kernel import fetch_kernel
    board = tmp_path / "x86-nor.toml"  # qemu-x86_64 with a 64 KiB NOR flash geometry
    board.write_text((ROOT / "boards/qemu-x86_64.toml").read_text()
                     + '\n[flash]\ntype = "nor"\nerase_block = "64KiB"\n')
    recipe = tmp_path / "mtd.toml"
    recipe.write_text('base = "busybox"\nmodules = ["virtio_blk", "block2mtd", "jffs2", "ubi", '
                      '"lzo", "zstd", "ubifs"]\n')  # ubifs needs its compressors' crypto
    plan = load_plan(str(board), str(recipe))
    kernel = fetch_kernel(plan.board)
    out = tmp_path / "out"
    build_image(plan, out, ["cpio", "jffs2", "ubi"], kernel=kernel)
    # UBI needs free erase blocks besides the image's: a 4 MiB "flash" of erased (0xFF)
    # blocks with the image at its start, as ubiformat would leave it.
    flash = tmp_path / "flash.ubi"
    image = (out / "rootfs.ubi").read_bytes()
    flash.write_bytes(image + b"\xff" * (4 * 1024 * 1024 - len(image)))
    setup = QemuSetup.for_board(plan.board)
    for i, path in enumerate((out / "rootfs.jffs2", flash)):
        setup.extra_args += ["-drive", f"file={path},format=raw,if=none,id=d{i},snapshot=on",
                             "-device", f"virtio-blk-pci,drive=d{i}"]
    mtd = "/sys/module/block2mtd/parameters/block2mtd"
    checks = [
        Check("jffs2-mounts", f"echo /dev/vda,65536 > {mtd} && mkdir -p /mnt/j && "
              "mount -t jffs2 -o ro mtd0 /mnt/j && ls -ln /mnt/j/dev/console /mnt/j/bin/busybox",
              r"^crw------- +1 +0 +0 +5, +1 .*console$"),
        Check("ubifs-mounts", f"rmmod ubifs ubi; echo /dev/vdb,65536 > {mtd} && "
              "modprobe ubi mtd=1 && modprobe ubifs && mkdir -p /mnt/u && "
              "mount -t ubifs -o ro ubi0:rootfs /mnt/u && ls -ln /mnt/u/dev/console",
              r"^crw------- +1 +0 +0 +5, +1 .*console$"),
        Check("no-crc-errors", "! dmesg | grep -iE 'jffs2.*(crc|error)|ubifs.*(crc|error)|"
              "ubi0 (error|warning)'"),
    ]
    with initramfs_with_modules(out / "rootfs.cpio") as initrd:
        report = check_guest(plan.board, "mtd", setup, kernel, initrd,
                             choose_accel(plan.arch, None), checks, tmp_path / "console.log",
                             GuestRun())
    assert report.ok, [(c.name, c.output, c.error) for c in report.checks] + [report.error]
