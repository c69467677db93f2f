"""What a bind-host container takes from a root directory: its top-level layout and programs.

Every probe takes the root it looks at: the build host's "/" for a container that runs on the
build host, or a device image's own tree for a device's service containers. Nothing here reads
"/" unless it is given "/".
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from ..arch import Arch
from ..errors import UserError

HOST_ROOT = Path("/")
# Top-level directories a bind-host container takes from the root, bound or linked.
HOST_TOP = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
_SYMLINK_HOPS = 40  # the kernel's own limit on nested links


@dataclass
class HostLayout:
    root: Path
    symlinks: Dict[str, str] = field(default_factory=dict)  # "/bin" -> "usr/bin"
    real_dirs: List[str] = field(default_factory=list)  # "/usr", and /bin... when not merged


def host_layout(root: Path = HOST_ROOT) -> HostLayout:
    """How `root` lays out /bin, /lib... : merged-/usr symlinks are mirrored, real dirs bound.

    A mount entry onto a symlinked /bin is refused by LXC ("Too many levels of symbolic links"),
    so each top-level directory is either one or the other, exactly as under `root`.
    """
    root = Path(root)
    layout = HostLayout(root)
    for name in HOST_TOP:
        path = root / name
        if path.is_symlink():
            target = os.readlink(path)
            # An absolute link (/usr/bin) would be read inside the container's root anyway;
            # a relative one keeps the rootfs usable from outside too.
            layout.symlinks["/" + name] = target.lstrip("/") if target.startswith("/") else target
        elif path.is_dir():
            layout.real_dirs.append("/" + name)
    if "/usr" not in layout.real_dirs:
        raise UserError(f"{root / 'usr'} is not a directory; a bind-host container needs it")
    return layout


def resolve_in(root: Path, path: str) -> Optional[Path]:
    """`path` (absolute, as seen inside `root`) on disk, symlinks followed inside `root`: an
    absolute link target is read from `root`, never from the machine's own "/". None when
    something on the way is missing."""
    root = Path(root)
    parts = [p for p in path.split("/") if p]
    done: List[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name == ".":
            continue
        if name == "..":
            if done:
                done.pop()
            continue
        here = root.joinpath(*done, name)
        if here.is_symlink():
            hops += 1
            if hops > _SYMLINK_HOPS:
                return None
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        if not here.exists():
            return None
        done.append(name)
    return root.joinpath(*done)


def find_program(root: Path, candidates: List[str]) -> Optional[str]:
    """The first of `candidates` (absolute paths inside `root`) that is a file there."""
    for candidate in candidates:
        real = resolve_in(root, candidate)
        if real is not None and real.is_file():
            return candidate
    return None


def python_version(root: Path, python: str) -> Optional[str]:
    """"3.11" for a `python` that resolves to python3.11 inside `root`; None when unknown."""
    real = resolve_in(root, python)
    m = re.fullmatch(r"python(\d+\.\d+)", real.name) if real is not None else None
    return m.group(1) if m else None


def foreign_binfmt_ok(arch: Arch, root: Path = HOST_ROOT) -> bool:
    """Is an enabled binfmt_misc handler with the F (fix binary) flag registered for `arch`
    in the machine whose root is `root`?

    F opens the interpreter at registration, so it works inside a container's mount namespace.
    """
    binfmt_dir = Path(root) / "proc/sys/fs/binfmt_misc"
    try:
        names = os.listdir(binfmt_dir)
    except OSError:
        return False
    for name in names:
        try:
            text = (binfmt_dir / name).read_text()
        except OSError:
            continue
        fields = dict(line.split(None, 1) for line in text.splitlines() if " " in line)
        if (
            text.startswith("enabled")
            and "F" in fields.get("flags:", "")
            and os.path.basename(fields.get("interpreter", "")).startswith(arch.qemu_user)
        ):
            return True
    return False
