"""lxembed list | new: the boards, recipes and overlays found and where each comes from; a new
product directory."""

from __future__ import annotations

import json
from pathlib import Path


def cmd_list(args) -> int:
    from ..config import load_board, load_recipe
    from ..config.product import catalog, search_dirs
    from ..suites import SUITES
    from .build import format_table

    def where(item) -> dict:
        return {"from": item.source.origin, "path": str(item.path), "hides": item.hides}

    boards = {}
    for item in catalog("boards"):
        b = load_board(str(item.path))
        boards[item.name] = {"arch": b.arch.debian, "suite": b.suite, "qemu": b.qemu is not None,
                             "description": b.settings["description"], **where(item)}
    recipes = {item.name: {"description": load_recipe(str(item.path)).settings["description"],
                           **where(item)} for item in catalog("recipes")}
    overlays = {item.name: where(item) for item in catalog("overlays")}
    search = [{"from": d.origin, "dir": str(d.path)} for d in search_dirs()]
    formats = dict(format_table())
    suites = {s.name: {"release": s.release, "arches": list(s.arches), "python": s.python,
                       "lxc": s.lxc} for s in SUITES.values()}
    if args.json:
        print(json.dumps({"search": search, "boards": boards, "recipes": recipes,
                          "overlays": overlays, "formats": formats, "suites": suites},
                         indent=2))
        return 0

    def origin(entry: dict) -> str:  # where from, what it is, what it hides further on
        hides = f" (hides {', '.join(entry['hides'])})" if entry["hides"] else ""
        return f"{entry['from']:12} {entry.get('description', '')}{hides}".rstrip()

    print("searched, in order:")
    for d in search:
        print(f"  {d['from']:12} {d['dir']}")
    width = max([16] + [len(name) for name in boards])
    print(f"{'boards:':{width + 3}}{'arch':9} {'suite':9}")
    for name, b in boards.items():
        kind = "qemu" if b["qemu"] else "hardware"
        print(f"  {name:{width}} {b['arch']:9} {b['suite']:9} {kind:8} {origin(b)}")
    print("recipes:")
    for name, r in recipes.items():
        print(f"  {name:16} {origin(r)}")
    print("overlays:")
    for name, o in overlays.items():
        print(f"  {name:16} {origin(o)}")
    print("formats:")
    for kind, names in formats.items():
        print(f"  {kind:16} {', '.join(names)}")
    print("suites (a board's `suite`):")
    for name, s in suites.items():
        print(f"  {name:16} Debian {s['release']}, Python {s['python']}, LXC {s['lxc']}: "
              f"{' '.join(s['arches'])}")
    return 0


def cmd_new(args) -> int:
    from ..config.starter import new_product
    target = Path(args.dir)
    name, written = new_product(target, args.name, args.board, args.suite)
    for rel in written:
        print(target / rel)
    print(f"next: cd {target} && lxembed test --user -b {name} -r {name}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("list", help="list boards, recipes and overlays, and where each "
                              "comes from (this product, LXEMBED_PATH, shipped)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = subparsers.add_parser("new", help="write a starting product: a board, a recipe "
                              "extending busybox, an overlay and a check")
    p.add_argument("dir", metavar="DIR", help="a new or empty directory")
    p.add_argument("--name", help="the board, recipe and overlay name (default: DIR's name)")
    p.add_argument("--board", "-b", default="qemu-arm64",
                   help="the board the product's board starts as a copy of (default: qemu-arm64)")
    p.add_argument("--suite", help="the Debian suite of the new board (default: the newest with "
                   "the board's architecture: trixie, bookworm for MIPS and i386)")
    p.set_defaults(func=cmd_new)
