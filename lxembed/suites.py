"""The Debian suites lxembed builds from: the one place with per-suite facts.

A board pins its suite (`suite = "trixie"` in the board file); everything that differs from one
release to the next -- which architectures it has, where its packages put /bin and /lib, the
Python the init runs on, the LXC the device runs -- is read from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError
from .tree import RootfsTree


@dataclass(frozen=True)
class Suite:
    name: str
    release: int  # Debian's release number
    # Architectures with both a userland and a kernel in this suite (trixie dropped mipsel and
    # mips64el, and has no i386 kernel).
    arches: tuple
    # Packages ship /bin, /sbin and /lib under /usr (trixie's libc6 has /usr/lib/ld-linux-*,
    # its busybox /usr/bin/busybox), so images get the merged-/usr links /bin -> usr/bin...
    merged_usr: bool
    python: str  # the python3.X-minimal of the suite: what the Python init runs on
    lxc: str  # the LXC version of its lxc package: what a device image runs


SUITES = {
    s.name: s
    for s in (
        Suite("bookworm", 12, ("amd64", "i386", "arm64", "armhf", "armel", "mipsel",
                               "mips64el"), False, "3.11", "5.0"),
        Suite("trixie", 13, ("amd64", "arm64", "armhf", "armel", "riscv64"), True, "3.13",
              "6.0"),
    )
}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise UserError(f"unknown Debian suite {name!r} (known: {', '.join(SUITES)})") from None


def newest_suite(arch: str) -> Suite:
    """The newest suite that has `arch`: a new board's default (bookworm for MIPS and i386)."""
    having = [s for s in SUITES.values() if arch in s.arches]
    if not having:
        raise UserError(f"no Debian suite lxembed knows has {arch}")
    return max(having, key=lambda s: s.release)


def merged_dirs(suite: Suite, ld_so: tuple) -> tuple:
    """(link, target) of the merged-/usr top-level links an image of `suite` has; /lib64 only
    where the architecture's loader lives there (amd64, mips64el)."""
    if not suite.merged_usr:
        return ()
    links = [("/bin", "usr/bin"), ("/sbin", "usr/sbin"), ("/lib", "usr/lib")]
    if any(p.startswith("/lib64/") for p in ld_so):
        links.append(("/lib64", "usr/lib64"))
    return tuple(links)


MERGED_USR = "merged /usr"  # the origin of those links in a tree


def empty_root(suite_name: str, arch) -> RootfsTree:
    """A tree to add `suite_name`'s packages to: for a merged-/usr suite, with /usr/bin,
    /usr/sbin, /usr/lib and the top-level links to them already in place, so a package's
    /bin/x and /usr/bin/x land in the same directory and "/bin/busybox" names the same file
    in every suite (mtimes 0: the build clamps them to SOURCE_DATE_EPOCH)."""
    tree = RootfsTree()
    for link, target in merged_dirs(get_suite(suite_name), arch.ld_so):
        tree.mkdir("/" + target, origin=MERGED_USR)
        tree.symlink(link, target, origin=MERGED_USR)
    return tree
