"""The in-memory tree and the writers, checked against the real cpio and tar tools."""

from __future__ import annotations

import io
import subprocess
import tarfile

import pytest

from lxembed.errors import UserError
from lxembed.tree import CHAR, HARDLINK, Entry, RootfsTree, normpath, symlink_escapes
from lxembed.writers.cpio import write_cpio
from lxembed.writers.output import write_formats


def small_tree() -> RootfsTree:
    tree = RootfsTree()
    tree.write("/bin/busybox", b"\x7fELF fake", mode=0o755, mtime=5)
    tree.symlink("/bin/sh", "busybox")
    tree.add("/dev/console", Entry(CHAR, 0o600, major=5, minor=1))
    tree.write("/etc/passwd", b"root:x:0:0::/root:/bin/sh\n", uid=0, gid=0)
    tree.write("/home/app/file", b"data", uid=1000, gid=1000)
    return tree


def test_normpath_refuses_dotdot():
    assert normpath("./usr//bin/") == "/usr/bin"
    with pytest.raises(UserError, match="escapes the root"):
        normpath("./usr/../../etc/passwd")


def test_symlink_escape_rules():
    assert symlink_escapes("/usr/lib/x", "../../../etc")
    assert not symlink_escapes("/usr/lib/x", "../../etc")
    assert not symlink_escapes("/usr/lib/x", "/etc/passwd")


def test_parents_resolve_through_symlinks_inside_the_tree():
    tree = RootfsTree()
    tree.mkdir("/usr/lib")
    tree.symlink("/lib", "usr/lib")
    tree.write("/lib/libc.so.6", b"x")
    assert tree.get("/usr/lib/libc.so.6") is not None
    assert "/lib/libc.so.6" not in tree.entries  # stored once, at its real path...
    # ...and found through the link, as lstat(2) finds it (the last component not followed).
    assert tree.get("/lib/libc.so.6") is tree.get("/usr/lib/libc.so.6")
    assert tree.get("/lib").type == "symlink"
    tree.symlink("/usr/lib/abs", "/etc")
    tree.write("/usr/lib/abs/conf", b"y")  # absolute target: read inside the image root
    assert tree.read("/etc/conf") == b"y"


def test_cpio_is_read_by_gnu_cpio(tmp_path):
    buf = io.BytesIO()
    write_cpio(small_tree(), buf)
    listing = subprocess.run(["cpio", "-itv", "--quiet", "--numeric-uid-gid"], input=buf.getvalue(),
                             capture_output=True, check=True).stdout.decode()
    assert "bin/sh -> busybox" in listing
    console = next(line for line in listing.splitlines() if line.endswith("dev/console"))
    assert console.startswith("crw-------") and "5,   1" in console
    app = next(line for line in listing.splitlines() if line.endswith("home/app/file"))
    assert " 1000     1000 " in app
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet", "--no-absolute-filenames", "--nonmatching",
                    "dev/*"], input=buf.getvalue(), cwd=out, check=True)
    assert (out / "home/app/file").read_bytes() == b"data"


def test_tar_keeps_devices_owners_and_modes(tmp_path):
    arts = write_formats(small_tree(), tmp_path, ["tar.gz"])
    with tarfile.open(arts[0].path) as tar:
        console = tar.getmember("./dev/console")
        assert console.ischr() and (console.devmajor, console.devminor) == (5, 1)
        assert tar.getmember("./home/app/file").uid == 1000
        assert tar.getmember("./bin/busybox").mode == 0o755


def test_dir_writer_skips_nodes_and_never_follows_symlinks(tmp_path):
    tree = small_tree()
    tree.symlink("/etc/evil", "/tmp")  # absolute: must not be followed on the host
    write_formats(tree, tmp_path, ["dir"])
    root = tmp_path / "rootfs"
    assert (root / "bin/sh").is_symlink()
    assert not (root / "dev/console").exists()
    assert (root / "etc/evil").is_symlink()


def test_manifest_lists_every_entry(tmp_path):
    import json
    write_formats(small_tree(), tmp_path, ["cpio"])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    paths = {e["path"]: e for e in manifest["entries"]}
    assert paths["/dev/console"]["device"] == "5:1"
    assert paths["/home/app/file"]["owner"] == "1000:1000"
    assert len(paths["/bin/busybox"]["sha256"]) == 64


def _squashfs_listing(path) -> str:
    return subprocess.run(["unsquashfs", "-lln", str(path)], capture_output=True, text=True,
                          check=True).stdout


def test_squashfs_takes_everything_from_the_tree(tmp_path):
    tree = small_tree()
    tree.add("/bin/ash", Entry(HARDLINK, 0o755, target="/bin/busybox"))
    tree.mkdir("/home/app/cache", mode=0o700, uid=1000, gid=1000)
    first = write_formats(tree, tmp_path / "a", ["squashfs"])[0]
    listing = _squashfs_listing(first.path)
    console = next(line for line in listing.splitlines() if line.endswith("/dev/console"))
    assert console.startswith("crw------- 0/0") and "5,  1" in console
    assert any(line.startswith("drwx------ 1000/1000") and line.endswith("/home/app/cache")
               for line in listing.splitlines())
    assert "/bin/sh -> busybox" in listing
    again = write_formats(tree, tmp_path / "b", ["squashfs"])[0]
    assert first.sha256 == again.sha256
    out = tmp_path / "x"
    subprocess.run(["unsquashfs", "-q", "-n", "-d", str(out), first.path], check=True,
                   capture_output=True)
    assert (out / "home/app/file").read_bytes() == b"data"
    assert (out / "bin/ash").read_bytes() == (out / "bin/busybox").read_bytes() == b"\x7fELF fake"



def test_a_file_cannot_replace_a_populated_directory():
    tree = small_tree()
    tree.write("/etc/fstab", b"x")
    with pytest.raises(UserError, match="/etc is a directory with content"):
        tree.write("/etc", b"not a directory")
    tree.mkdir("/empty")
    tree.write("/empty", b"an empty directory may become a file")
    assert tree.get("/empty").type == "file"


def test_overlay_keeps_dotfiles_and_ignores_the_checkouts_modes(tmp_path):
    from lxembed.rootfs.overlay import add_overlay

    trees = []
    for umask_mode in (0o775, 0o700):
        root = tmp_path / f"o{umask_mode:o}"
        (root / "etc" / "skel").mkdir(parents=True)
        (root / ".profile").write_text("export A=1\n")
        (root / "etc" / "skel" / ".bashrc").write_text("b\n")
        for d in (root / "etc", root / "etc" / "skel"):
            d.chmod(umask_mode)
        tree = RootfsTree()
        add_overlay(tree, root, 0)
        trees.append({p: (e.type, e.mode, e.data) for p, e in tree})
    assert trees[0] == trees[1]
    assert "/.profile" in trees[0] and "/etc/skel/.bashrc" in trees[0]
    assert "/profile" not in trees[0]
    assert trees[0]["/etc"][1] == 0o755
