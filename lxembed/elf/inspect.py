"""What is in an image: architectures, library closures, setuid and world-writable files."""

from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional

from ..arch import Arch, get_arch
from ..errors import UserError
from ..tree import FILE, HARDLINK, SYMLINK, RootfsTree
from .closure import NOT_FOR_THE_CPU, LibraryResolver, wrong_arch_message
from .identify import ElfInfo, identify, is_elf, runs_on
from .sysroot import TreeSysroot


def detect_arch(infos: List[ElfInfo], what: str) -> Arch:
    counts = Counter(
        a.debian for info in infos if not info.arch_independent for a in info.matching_arches()
    )
    if not counts:
        raise UserError(f"cannot tell the architecture of {what}", hint="give --arch")
    return get_arch(counts.most_common(1)[0][0])


def inspect_tree(tree: RootfsTree, arch: Optional[Arch] = None, top: int = 10) -> Dict:
    """Everything `lxembed inspect` reports, as a dict (the --json output)."""
    infos: Dict[str, ElfInfo] = {}
    malformed = []
    for path, entry in tree:
        if entry.type == FILE and is_elf(entry.data[:4]):
            try:
                infos[path] = identify(entry.data, path)
            except UserError as err:
                malformed.append(str(err))
    code = {p: i for p, i in infos.items() if not p.startswith(NOT_FOR_THE_CPU)}
    if arch is None and code:
        arch = detect_arch(list(code.values()), "the image")
    labels = Counter(_arch_label(info) for info in code.values())
    wrong = [
        wrong_arch_message(p, i, arch) for p, i in code.items() if arch and not runs_on(i, arch)
    ]
    broken, checked = [], 0
    if arch is not None:
        resolver = LibraryResolver(TreeSysroot(tree), arch)
        for path, info in code.items():
            if not runs_on(info, arch) or info.elf_type not in ("ET_EXEC", "ET_DYN"):
                continue
            if info.is_static:
                continue
            checked += 1
            try:
                missing = [m.message() for m in resolver.program(path).missing]
            except UserError as err:  # a malformed library or a loader for another arch
                missing = [str(err)]
            if missing:
                broken.append({"path": path, "missing": missing})
    files = [(p, e) for p, e in tree if e.type in (FILE, HARDLINK)]
    special = [
        {"path": p, "mode": f"{e.mode:04o}", "uid": e.uid, "gid": e.gid}
        for p, e in files
        if e.mode & 0o6000
    ]
    writable = [
        {"path": p, "type": e.type, "mode": f"{e.mode:04o}", "sticky": bool(e.mode & 0o1000)}
        for p, e in tree
        if e.type != SYMLINK and e.mode & 0o002
    ]
    biggest = sorted(((len(e.data), p) for p, e in files if e.type == FILE), reverse=True)[:top]
    return {
        "entries": len(tree),
        "bytes": tree.total_bytes(),
        "arch": arch.debian if arch else None,
        "elf_files": len(infos),
        "architectures": dict(labels.most_common()),
        "wrong_arch": wrong,
        "malformed": malformed,
        "closures": {"checked": checked, "satisfied": checked - len(broken), "broken": broken},
        "setuid_setgid": special,
        "world_writable": writable,
        "biggest": [{"path": p, "bytes": n} for n, p in biggest],
    }


def _arch_label(info: ElfInfo) -> str:
    if info.arch_independent:
        return "arch-independent"
    arches = info.matching_arches()
    return "/".join(a.debian for a in arches) if arches else info.describe()


