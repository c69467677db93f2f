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
_PART = r"(?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+)"
_KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")


def parse(path: Path) -> Tuple[Dict[str, Any], str]:
    """Parse a TOML file; a syntax error becomes `file:line: message`."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise UserError(f"{path}: {err.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        what = "UTF-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else f"byte 0x{raw[err.start]:02x}"
        raise UserError(f"{path}:{line}: not UTF-8 text ({what})",
                        hint=f"TOML files are UTF-8: iconv -t UTF-8 {path}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as err:
        msg = str(err)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if m:
            line = int(m.group(1))
        elif "end of document" in msg:
            line = max(1, len(text.splitlines()))
        else:
            line = 1
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", msg)
        raise UserError(f"{path}:{line}: invalid TOML: {msg}") from None


def _dotted(name: str) -> str:
    """`a . "b.c"` -> `a.b.c`: a dotted key (or header) as one comparable string."""
    return ".".join(part.strip("\"'") for part in re.findall(_PART, name))


def key_line(text: str, table: str, key: str, index: int = 0) -> int:
    """Line number of `key` inside `[table]` (the `index`-th `[[table]]`); 1 if not found.

    Finds the key however TOML lets it be written: under a `[table]` header, as a dotted key
    (`qemu.memory = ...`), or inside an inline table or array (the line of the enclosing key).
    With no key, the line of the table's header (or of the key that holds it inline).
    """
    target = ".".join(p for p in (table, key) if p)
    current, seen, nearest = "", {}, 0
    for number, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m:
            current = _dotted(m.group(2))
            seen[current] = seen.get(current, -1) + 1
            if current == target and seen[current] == index:
                return number
            continue
        m = _KEY.match(line)
        if not m:
            continue
        if table and current == table and seen.get(table, 0) != index:
            continue  # another [[table]] entry
        name = _dotted(m.group(1))
        full = f"{current}.{name}" if current else name
        if full == target:
            return number
        if target.startswith(full + ".") and not nearest:
            nearest = number  # the value sits in an inline table under this key
    return nearest or 1
