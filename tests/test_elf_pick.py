"""pick_files: the picked files, their exact closure, data paths, parents; owners and modes kept."""

from __future__ import annotations

import pytest
from test_elf_closure import EL, HF, TRIPLET, armhf_tree
from test_elf_synth import ET_EXEC, make_elf

from lxembed.arch import get_arch
from lxembed.elf.closure import check_tree_arch, elf_closure
from lxembed.elf.pick import pick_files
from lxembed.elf.sysroot import TreeSysroot
from lxembed.errors import UserError
from lxembed.tree import DIR, HARDLINK, SYMLINK, Entry

ARMHF = get_arch("armhf")


@pytest.fixture
def source():
    t = armhf_tree()
    t.write(f"{TRIPLET}/libunused.so.1", make_elf(**HF, soname="libunused.so.1"))
    t.write("/usr/bin/other", make_elf(**HF, e_type=ET_EXEC, interp="/lib/ld-linux-armhf.so.3"))
    t.entries["/usr/bin/prog"].mode = 0o4755
    t.entries["/usr/bin/prog"].gid = 50
    t.entries[TRIPLET].mode = 0o750
    t.entries[TRIPLET].uid = 7
    return t


def test_pick_takes_the_file_and_its_exact_closure(source):
    out = pick_files(source, ["/usr/bin/prog"], [], ARMHF)
    files = {p for p, e in out if e.type not in (DIR,)}
    assert files == {
        "/usr/bin/prog",
        "/lib",  # /lib -> usr/lib: the loader path and the libraries go through it
        "/usr/lib/ld-linux-armhf.so.3",
        f"{TRIPLET}/ld-linux-armhf.so.3",
        f"{TRIPLET}/libc.so.6",
        f"{TRIPLET}/libfoo.so.1",
        f"{TRIPLET}/libfoo.so.1.2.3",
    }
    assert out.entries["/lib"].type == SYMLINK and out.entries["/lib"].target == "usr/lib"
    assert out.entries["/usr/bin/prog"].mode == 0o4755 and out.entries["/usr/bin/prog"].gid == 50
    assert (out.entries[TRIPLET].mode, out.entries[TRIPLET].uid) == (0o750, 7)
    assert out.entries["/usr/bin/prog"].data == source.entries["/usr/bin/prog"].data
    # the picked tree is self-sufficient: same closure, nothing missing, right architecture
    closure = elf_closure(TreeSysroot(out), ["/usr/bin/prog"], ARMHF)
    assert not closure.missing
    assert (
        closure.real_paths == elf_closure(TreeSysroot(source), ["/usr/bin/prog"], ARMHF).real_paths
    )
    check_tree_arch(out, ARMHF)


def test_pick_does_not_share_entries_with_the_source(source):
    out = pick_files(source, ["/usr/bin/prog"], [], ARMHF)
    out.entries["/usr/bin/prog"].mode = 0o700
    assert source.entries["/usr/bin/prog"].mode == 0o4755


def test_globs_and_symlinked_picks(source):
    out = pick_files(source, ["/usr/bin/*"], [], ARMHF)
    assert {"/usr/bin/prog", "/usr/bin/other"} <= set(out.entries)
    out = pick_files(source, ["/lib/arm-linux-gnueabihf/libfoo.so.1"], [], ARMHF)
    assert {
        "/lib",
        f"{TRIPLET}/libfoo.so.1",
        f"{TRIPLET}/libfoo.so.1.2.3",
        f"{TRIPLET}/libc.so.6",
    } <= set(out.entries)
    assert "/usr/bin/prog" not in out.entries


def test_data_paths_are_copied_recursively_with_their_libraries(source):
    source.write("/usr/share/prog/a.txt", b"a")
    source.write("/usr/share/prog/sub/b.txt", b"b", mode=0o600, uid=3)
    source.write("/etc/prog.conf", b"conf")
    source.symlink("/usr/share/prog/conf", "/etc/prog.conf")
    source.write("/usr/lib/prog/plugins/libplug.so", make_elf(**HF, needed=["libplugdep.so.0"]))
    source.write(f"{TRIPLET}/libplugdep.so.0", make_elf(**HF, soname="libplugdep.so.0"))
    out = pick_files(source, ["/usr/bin/prog"], ["/usr/share/prog", "/usr/lib/prog"], ARMHF)
    assert out.entries["/usr/share/prog/sub/b.txt"].mode == 0o600
    assert out.entries["/usr/share/prog/sub/b.txt"].uid == 3
    assert out.read("/usr/share/prog/conf") == b"conf"  # the link and the file it points to
    assert f"{TRIPLET}/libplugdep.so.0" in out.entries  # a plugin's library comes along
    assert f"{TRIPLET}/libunused.so.1" not in out.entries


def test_hardlinked_pick_brings_the_file_holding_the_data(source):
    source.entries["/usr/bin/prog2"] = Entry(HARDLINK, 0o755, target="/usr/bin/prog")
    out = pick_files(source, ["/usr/bin/prog2"], [], ARMHF)
    assert out.entries["/usr/bin/prog2"].type == HARDLINK
    assert out.read("/usr/bin/prog2") == source.read("/usr/bin/prog")
    assert f"{TRIPLET}/libfoo.so.1.2.3" in out.entries


def test_pick_errors(source):
    with pytest.raises(UserError, match="pick /usr/bin/nope matches nothing"):
        pick_files(source, ["/usr/bin/nope"], [], ARMHF)
    with pytest.raises(UserError, match="data path /usr/share/nothing/\\* matches nothing"):
        pick_files(source, [], ["/usr/share/nothing/*"], ARMHF)
    source.write("/usr/bin/needy", make_elf(**HF, e_type=ET_EXEC, needed=["libgone.so.3"]))
    with pytest.raises(UserError, match="libgone.so.3 not found: needed by /usr/bin/needy"):
        pick_files(source, ["/usr/bin/needy"], [], ARMHF)
    source.write("/usr/bin/soft", make_elf(**EL, e_type=ET_EXEC))
    with pytest.raises(UserError, match="/usr/bin/soft is an ELF for armel .* the board is armhf"):
        pick_files(source, ["/usr/bin/soft"], [], ARMHF)


def test_non_elf_picks_are_copied_as_they_are(source):
    source.write("/usr/bin/script", b"#!/bin/sh\necho hi\n", mode=0o755)
    out = pick_files(source, ["/usr/bin/script"], [], ARMHF)
    assert out.read("/usr/bin/script").startswith(b"#!") and "/usr/bin/prog" not in out.entries
