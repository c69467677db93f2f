"""TOML parsing that can say file:line for a key (tomllib gives values, not positions)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..errors import UserError

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
_KEY = re.compile(r"^\s*(\"[^\"]+\"|'[^']+'|[A-Za-z0-9_.-]+)\s*=")


def parse(path: Path) -> Tuple[Dict[str, Any], str]:
    """Parse a TOML file; a syntax error becomes `file:line: message`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"{path}: {err.strerror}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as err:
        msg = str(err)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        line = m.group(1) if m else "1"
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg)
        raise UserError(f"{path}:{line}: invalid TOML: {msg}") from None


def key_line(text: str, table: str, key: str, index: int = 0) -> int:
    """Line number of `key` inside `[table]` (the `index`-th `[[table]]`); 1 if not found."""
    current, seen, fallback = "", {}, 0
    for number, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m:
            current = m.group(2).replace(" ", "")
            seen[current] = seen.get(current, -1) + 1
            if current == table and not key and seen[current] == index:
                return number
            continue
        m = _KEY.match(line)
        if m and current == table and seen.get(table, 0) == index:
            name = m.group(1).strip("\"'")
            if name == key or name.split(".")[0] == key:
                return number
        if m and not table and m.group(1).split(".")[0] == table + key:
            fallback = fallback or number
    return fallback or 1
