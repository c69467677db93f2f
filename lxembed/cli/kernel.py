"""lxembed kernel-check: what the board's kernel offers containers and networks."""

from __future__ import annotations

import json

from ..errors import UserError


def cmd_kernel_check(args) -> int:
    from ..config import load_board
    from ..pipeline import board_kernel_config
    from ..sources.kernel_config import MISSING, read_config, report
    if args.config:
        config, label = read_config(args.config), args.config
    else:
        board = load_board(args.board)
        config, label = board_kernel_config(board, args.mirror), f"board {board.name}"
        if config is None and board.settings["kernel"] is not None:
            raise UserError(f"{board.path}: board {board.name}'s [kernel] has no config",
                            hint="add [kernel] config = \"PATH\" (the kernel's .config), or "
                                 "give it: --config FILE")
        if config is None:
            raise UserError(f"board {board.name} boots no Debian kernel and names no "
                            "kernel_config", hint="give the vendor kernel's .config: --config FILE")
    rows = report(config)
    if args.json:
        print(json.dumps({"kernel_config": config.source, "capabilities": rows}, indent=2))
    else:
        print(f"{label}: {config.source}")
        group = None
        for row in rows:
            if row["group"] != group:
                group = row["group"]
                print(f"{group}:")
            extra = f" ({row['module']})" if row["module"] else ""
            print(f"  {row['capability']:28} {row['state']}{extra}")
    return 1 if args.strict and any(r["state"] == MISSING for r in rows) else 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "kernel-check", help="report namespaces, cgroups, network and filesystem support of a "
        "board's kernel, from its configuration (like lxc-checkconfig, before flashing)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--board", "-b", help="board whose kernel is read (its pinned Debian "
                       "kernel, or its own [kernel])")
    where.add_argument("--config", help="a kernel .config (a vendor kernel)")
    p.add_argument("--mirror", help="Debian mirror URL (default: the host's apt sources)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--strict", action="store_true", help="exit status 1 if anything is missing")
    p.set_defaults(func=cmd_kernel_check)
