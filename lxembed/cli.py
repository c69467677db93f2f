"""Command line: lxembed build | list | show (and the commands other modules register)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import List, Optional

from . import log
from .config import list_boards, list_recipes, load_board, load_plan
from .config.schema import BOARD_SETTINGS, RECIPE_SETTINGS
from .errors import UserError
from .pipeline import DEFAULT_FORMATS, build_image, default_output

# Modules that add subcommands through register(subparsers).
COMMAND_MODULES = ("lxembed.cli_elf", "lxembed.cli_qemu", "lxembed.cli_containers")


def add_target_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--board", "-b", required=True, help="board name or path to a board TOML")
    parser.add_argument("--recipe", "-r", required=True,
                        help="recipe name or path to a recipe TOML")
    parser.add_argument("--mirror", help="Debian mirror URL (default: the host's apt sources)")


def cmd_build(args) -> int:
    plan = load_plan(args.board, args.recipe)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    output = Path(args.output) if args.output else default_output(plan)
    artifacts = build_image(plan, output, formats, args.mirror)
    if args.json:
        print(json.dumps({"board": plan.board.name, "recipe": plan.recipe.name,
                          "artifacts": [a.as_dict() for a in artifacts]}, indent=2))
    else:
        for a in artifacts:
            print(f"{a.format:10} {a.bytes:>10}  {a.path}")
    return 0


def cmd_list(args) -> int:
    boards = {}
    for name in list_boards():
        b = load_board(name)
        boards[name] = {"arch": b.arch.debian, "suite": b.suite, "qemu": b.qemu is not None,
                        "description": b.settings["description"]}
    from .config import load_recipe
    recipes = {n: load_recipe(n).settings["description"] for n in list_recipes()}
    if args.json:
        print(json.dumps({"boards": boards, "recipes": recipes}, indent=2))
        return 0
    print("boards:")
    for name, b in boards.items():
        kind = "qemu" if b["qemu"] else "hardware"
        print(f"  {name:16} {b['arch']:9} {b['suite']:9} {kind:8} {b['description']}")
    print("recipes:")
    for name, desc in recipes.items():
        print(f"  {name:16} {desc}")
    return 0


def cmd_show(args) -> int:
    plan = load_plan(args.board, args.recipe)
    a = plan.arch
    resolved = {
        "board": {"name": plan.board.name, "file": str(plan.board.path), **plan.board.settings},
        "arch": {"debian": a.debian, "triplet": a.triplet, "elf": f"ELF{a.elf_class} {a.elf_endian}"
                 f" machine {a.elf_machine}", "qemu_user": a.qemu_user_path,
                 "qemu_system": a.qemu_system, "oci": a.oci, "lxc": a.lxc},
        "recipe": {"name": plan.recipe.name, "files": [str(p) for p in plan.recipe.sources],
                   **plan.recipe.settings},
        "source_date_epoch": plan.epoch,
    }
    print(json.dumps(resolved, indent=2, default=str))
    return 0


def cmd_config_docs(args) -> int:
    from .config.schema import describe
    print("## Board keys\n\n" + describe(BOARD_SETTINGS) + "\n\n## Recipe keys\n\n"
          + describe(RECIPE_SETTINGS))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lxembed", description="Minimal busybox images and "
                                     "containers for embedded boards, from Debian packages.")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="build an image")
    add_target_args(p)
    p.add_argument("--output", "-o", help="output directory (default: out/BOARD-RECIPE)")
    p.add_argument("--format", "-f", default=",".join(DEFAULT_FORMATS),
                   help="comma-separated: dir, tar, cpio, each optionally .zst or .gz; lxc, oci")
    p.add_argument("--json", action="store_true", help="print artifacts as JSON")
    p.set_defaults(func=cmd_build)
    p = sub.add_parser("list", help="list boards and recipes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", help="print the resolved configuration")
    add_target_args(p)
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("config-docs", help="print the board and recipe key reference")
    p.set_defaults(func=cmd_config_docs)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    log.set_quiet(args.quiet or getattr(args, "json", False))
    try:
        return args.func(args)
    except UserError as err:
        print(f"lxembed: error: {err}", file=sys.stderr)
        if err.hint:
            print(f"lxembed: hint: {err.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lxembed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
