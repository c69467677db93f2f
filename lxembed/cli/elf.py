"""`lxembed ldd` (a cross-architecture ldd) and `lxembed inspect` (what is in an image)."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, List, Optional

from ..errors import UserError

if TYPE_CHECKING:  # annotations only: the modules load when a command runs
    from ..elf.closure import ProgramClosure


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ldd",
        help="list the libraries programs load, for any architecture, without running them",
        description="A cross-architecture ldd: reads the ELF files and searches the sysroot as "
        "glibc's loader does. Exit status 1 if a library is missing.",
    )
    p.add_argument("--sysroot", default="/", help="root directory to search in (default: /)")
    p.add_argument("--arch", help="Debian architecture (default: that of the first file)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="path inside the sysroot (a host path under the sysroot works too)",
    )
    p.set_defaults(func=cmd_ldd)
    p = subparsers.add_parser(
        "inspect",
        help="report what an image holds: architectures, library closures and risky files; "
        "a firmware disk's partitions, boot state and slots; an update bundle; a FIT",
        description="Inspect a directory or an image (tar, cpio newc; raw, .gz, .zst, .xz). "
        "Exit status 1 if an ELF cannot run on the image's architecture, is "
        "malformed, or misses a library. A firmware disk (format firmware): its partitions, "
        "the boot state (which env copy is current, the boot order and attempts left), each "
        "slot's version and FIT; an SWUpdate bundle (.swu): version, board, selections, the "
        "image's sha256 and the signature; a FIT: its images, hashes and signatures. Exit "
        "status 1 if one of those is damaged.",
    )
    p.add_argument("path", metavar="PATH", help="image file or directory")
    p.add_argument("--arch", help="the board's Debian architecture (default: the most common)")
    p.add_argument("--top", type=int, default=10, help="how many of the biggest files to list")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_inspect)


# -- ldd ------------------------------------------------------------------------------------------

def _inside(sysroot: str, path: str) -> str:
    """A path inside the sysroot: a host path under it is translated, anything else kept."""
    root = os.path.abspath(sysroot)
    host = os.path.abspath(path)
    if root != "/" and (host + "/").startswith(root + "/") and os.path.lexists(host):
        return "/" + os.path.relpath(host, root)
    return path if path.startswith("/") else "/" + path


def cmd_ldd(args) -> int:
    from ..arch import get_arch
    from ..elf.closure import LibraryResolver
    from ..elf.identify import identify, is_elf
    from ..elf.inspect import detect_arch
    from ..elf.sysroot import HostSysroot
    sysroot = HostSysroot(args.sysroot)
    if not os.path.isdir(sysroot.root):
        raise UserError(f"sysroot {args.sysroot} is not a directory")
    files = [_inside(args.sysroot, f) for f in args.files]
    arch = get_arch(args.arch) if args.arch else None
    if arch is None:
        infos = []
        for path in files:
            data = sysroot.read(path)
            if data is not None and is_elf(data):
                infos.append(identify(data, path, dynamic=False))
        arch = detect_arch(infos, ", ".join(files))
    resolver = LibraryResolver(sysroot, arch)
    reports, failed = [], False
    for path in files:
        try:
            program: Optional[ProgramClosure] = resolver.program(path)
            error = None
        except UserError as err:
            program, error = None, str(err)
        failed = failed or error is not None or bool(program and program.missing)
        reports.append((path, program, error))
    if args.json:
        print(
            json.dumps(
                {
                    "sysroot": sysroot.root,
                    "arch": arch.debian,
                    "files": [_ldd_json(p, prog, err) for p, prog, err in reports],
                },
                indent=2,
            )
        )
    else:
        for path, program, error in reports:
            if len(reports) > 1:
                print(f"{path}:")
            for line in _ldd_text(program, error):
                print(line)
            for missing in program.missing if program else ():
                print(f"lxembed: {missing.message()}", file=sys.stderr)
    return 1 if failed else 0


def _ldd_text(program: Optional[ProgramClosure], error: Optional[str]) -> List[str]:
    if error is not None:
        return [f"\terror: {error}"]
    if program.info is None or program.info.elf_type not in ("ET_EXEC", "ET_DYN"):
        return ["\tnot a dynamic executable"]
    if program.info.is_static:
        return ["\tstatically linked"]
    lines = []
    for name, path in program.ldd_lines:
        if path is None:
            lines.append(f"\t{name} => not found")
        else:
            lines.append(f"\t{path}" if name == path else f"\t{name} => {path}")
    lines += [
        f"\t{m.name} => not found (the dynamic loader)" for m in program.missing if m.is_interp
    ]
    return lines


def _ldd_json(path: str, program: Optional[ProgramClosure], error: Optional[str]) -> dict:
    if program is None:
        return {"path": path, "error": error}
    info = program.info
    return {
        "path": path,
        "elf": info.describe() if info else None,
        "interp": info.interp if info else None,
        "static": bool(info and info.is_static),
        "libraries": [
            {
                "name": o.name,
                "path": o.path,
                "real_path": o.real_path,
                "needed_by": o.loader.path if o.loader else None,
            }
            for o in program.objects
        ],
        "missing": [
            {
                "name": m.name,
                "chain": list(m.chain),
                "searched": list(m.searched),
                "message": m.message(),
            }
            for m in program.missing
        ],
        "error": None,
    }


# -- inspect ---------------------------------------------------------------------------------------

def cmd_inspect(args) -> int:
    from pathlib import Path

    from ..arch import get_arch
    from ..elf.image_reader import read_image
    from ..elf.inspect import inspect_tree
    from ..reports.firmware import artifact_lines, inspect_artifact
    found = inspect_artifact(Path(args.path))  # a firmware disk, an update bundle, a FIT
    if found is not None:
        print(json.dumps(found, indent=2) if args.json else "\n".join(artifact_lines(found)))
        return 1 if found["problems"] else 0
    arch = get_arch(args.arch) if args.arch else None  # before reading a large image
    tree, fmt = read_image(args.path)
    report = inspect_tree(tree, arch, args.top)
    report = {"image": str(args.path), "format": fmt, **report}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_inspect(report)
    bad = report["wrong_arch"] or report["malformed"] or report["closures"]["broken"]
    return 1 if bad else 0


def _print_inspect(r: dict) -> None:
    print(f"{r['image']}: {r['format']}, {r['entries']} entries, {_size(r['bytes'])} in files")
    arches = ", ".join(f"{k} {v}" for k, v in r["architectures"].items()) or "none"
    print(f"ELF files: {r['elf_files']} ({arches}); board architecture: {r['arch'] or '-'}")
    for message in r["wrong_arch"] + r["malformed"]:
        print(f"  REFUSED {message}")
    c = r["closures"]
    print(f"Library closures: {c['satisfied']} of {c['checked']} dynamic ELF files satisfied")
    for item in c["broken"]:
        for message in item["missing"]:
            print(f"  BROKEN {item['path']}: {message}")
    print(f"Setuid/setgid files: {len(r['setuid_setgid'])}")
    for s in r["setuid_setgid"]:
        print(f"  {s['mode']} {s['uid']}:{s['gid']} {s['path']}")
    print(f"World-writable: {len(r['world_writable'])}")
    for w in r["world_writable"]:
        print(f"  {w['mode']} {w['type']:8} {w['path']}" + (" (sticky)" if w["sticky"] else ""))
    print("Biggest files:")
    for b in r["biggest"]:
        print(f"  {_size(b['bytes']):>10}  {b['path']}")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
