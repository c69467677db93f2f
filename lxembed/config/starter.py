"""`lxembed new DIR`: a small starting product (a board, a recipe with an overlay and a check)
that builds and passes `lxembed test` as written, to be edited into one's own."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import UserError
from ..suites import get_suite, newest_suite
from .loader import load_board
from .product import PRODUCT_FILE

# The name becomes file names, an overlay directory, a path in the image and part of a regex.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_DESCRIPTION = re.compile(r"^description\s*=.*$", re.M)
_SUITE = re.compile(r"^suite\s*=.*$", re.M)

_PRODUCT = """\
# An lxembed product: lxembed run in this directory (or with -C DIR) finds the boards, recipes
# and overlays here before the ones it ships; `lxembed list` says where each one comes from.
# dir = "."   # or where boards/, recipes/ and overlays/ are, relative to this file
"""

_RECIPE = """\
# The shipped busybox recipe, plus this product's overlay and a check of it.
# `lxembed show -b {name} -r {name}` prints it resolved; `lxembed config-docs` lists every key.
description = "{name}: busybox, plus the files in overlays/{name}/"
# A shipped recipe: its packages, overlays and network come along; lists here are added to its.
base = "busybox"
# overlays/{name}/ is laid over the root filesystem, after the base's overlays.
overlays = ["{name}"]

# lxembed test runs it: in the booted image, and under qemu-user with --user.
[[checks]]
name = "{name}-release"
command = "cat /etc/{name}-release"
expect = "^{name} 0[.]1$"
"""


def starter_files(name: str, board: str, suite: Optional[str] = None) -> Dict[str, str]:
    """Relative path -> text of every file `lxembed new` writes. The board is on `suite`,
    by default the newest Debian suite with its architecture (trixie; bookworm for MIPS and
    i386)."""
    shipped = load_board(board)
    # Boards do not extend one another (only recipes have `base`): the board is a copy.
    text = shipped.path.read_text(encoding="utf-8")
    description = f'description = "{name}: started as a copy of {shipped.name}"'
    text = _DESCRIPTION.sub(description, text, count=1) if _DESCRIPTION.search(text) else \
        f"{description}\n{text}"
    chosen = get_suite(suite) if suite else newest_suite(shipped.arch.debian)
    if shipped.arch.debian not in chosen.arches:
        raise UserError(f"Debian {chosen.name} has no {shipped.arch.debian} (the architecture "
                        f"of {shipped.name})",
                        hint="`lxembed list` shows each suite's architectures")
    if chosen.name != shipped.suite or not _SUITE.search(text):
        line = (f'suite = "{chosen.name}"   # Debian {chosen.release}; `lxembed list` shows '
                "the suites and their architectures")
        text = _SUITE.sub(line, text, count=1) if _SUITE.search(text) else f"{text}{line}\n"
    header = (f"# {name}: a copy of lxembed's {shipped.name} board ({shipped.path.name}), to "
              "change where your\n# hardware differs; `lxembed config-docs` lists every key. "
              "Your own kernel (a vendor's):\n# a [kernel] table, docs/qemu.md.\n")
    return {
        PRODUCT_FILE: _PRODUCT,
        f"boards/{name}.toml": header + text,
        f"recipes/{name}.toml": _RECIPE.format(name=name),
        f"overlays/{name}/etc/{name}-release": f"{name} 0.1\n",
        ".gitignore": "out/\n",  # where `lxembed build` writes by default
    }


def new_product(target: Path, name: Optional[str] = None, board: str = "qemu-arm64",
                suite: Optional[str] = None) -> Tuple[str, List[str]]:
    """Write a starting product into `target` (new, or an empty directory): its name and the
    files written.
    All or nothing: a failure part-way removes what this call wrote."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise UserError(f"{target}: exists and is not a directory")
    if target.is_dir() and any(target.iterdir()):
        raise UserError(f"{target}: not empty (lxembed new writes only into a new or empty "
                        "directory)")
    name = name or target.resolve().name
    if not NAME.fullmatch(name):
        raise UserError(f"{name!r} cannot name a board, recipe and overlay: letters, digits, "
                        "'-' and '_' only", hint="lxembed new DIR --name NAME")
    # Before anything is written: an unknown board or suite writes none.
    files = starter_files(name, board, suite)
    made = None  # the outermost directory this call makes: removed whole on a failure
    if not target.exists():
        made = target
        while not made.parent.exists():
            made = made.parent
    try:
        for rel, text in files.items():
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        else:  # it was empty: empty it again
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink()
        raise
    return name, list(files)
