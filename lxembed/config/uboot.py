"""A board's U-Boot in qemu: its [uboot] table, or one line saying why it has none."""

from __future__ import annotations

from typing import List

from ..errors import UserError
from .loader import Board, list_boards, load_board
from .toml_lines import key_line


def uboot_boards() -> List[str]:
    """The boards whose U-Boot can boot a FIT, for hints."""
    usable = []
    for name in list_boards():
        try:
            uboot = load_board(name).settings.get("uboot")
        except UserError:  # a broken board file says so when it is used, not in a hint
            continue
        if uboot is not None and not uboot["unsupported"]:
            usable.append(name)
    return usable


def uboot_settings(board: Board, what: str = "--boot uboot") -> dict:
    """The board's [uboot] table, or one line saying why it has none that `what` can use."""
    uboot = board.settings.get("uboot")
    why = (uboot or {}).get("unsupported") or ("" if uboot else
                                               "no U-Boot build for its machine")
    if why:
        where = f"{board.path}:{key_line(board.path.read_text(), 'uboot', 'unsupported')}" \
            if uboot else str(board.path)
        raise UserError(f"{where}: board {board.name} has no usable U-Boot: {what} "
                        f"cannot use it ({why})",
                        hint=f"boards with one: {', '.join(uboot_boards())}")
    for key in ("firmware", "kernel_load"):
        if not uboot[key]:
            raise UserError(f"{board.path}:{key_line(board.path.read_text(), 'uboot', '')}: "
                            f"[uboot] has no {key}")
    return uboot
