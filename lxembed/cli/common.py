"""Arguments several commands share."""

from __future__ import annotations

import argparse


def add_target_args(parser: argparse.ArgumentParser, mirror: bool = True) -> None:
    parser.add_argument("--board", "-b", required=True, help="board name or path to a board TOML")
    parser.add_argument("--recipe", "-r", required=True,
                        help="recipe name or path to a recipe TOML")
    if mirror:
        parser.add_argument("--mirror", help="Debian mirror URL (default: the host's apt sources)")
