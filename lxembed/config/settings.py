"""A setting (key, type, default, choices, help) and the validation every settings table shares.

Parsing, validation, defaults, `lxembed show` and the generated docs all come from tables of
Settings; adding a key is one entry in a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..errors import UserError
from .toml_lines import key_line


@dataclass(frozen=True)
class Setting:
    key: str
    kind: str  # str int float bool size list dict table tables raw
    default: Any = None
    help: str = ""
    choices: Tuple[str, ...] = ()
    fields: Tuple[Setting, ...] = ()  # for table / tables


_PY_TYPES = {"str": str, "int": int, "size": (int, str), "float": (int, float), "bool": bool,
             "list": list, "dict": dict, "table": dict, "tables": list}
_TYPE_NAMES = {"str": "a string", "int": "an integer",
               "size": "a size (bytes, or \"4MiB\", \"512K\")", "float": "a number",
               "bool": "true or false", "list": "a list",
               "dict": "a table", "table": "a table", "tables": "an array of tables"}


def validate(data: Dict[str, Any], settings, path: Path, text: str, table: str = "",
             index: int = 0) -> Dict[str, Any]:
    """Check `data` against `settings`; returns a dict with every key, defaults filled in."""
    known = {s.key: s for s in settings}
    where = f"[{table}] " if table else ""
    for key in data:
        if key not in known:
            line = key_line(text, table, key, index)
            raise UserError(f"{path}:{line}: unknown key {where}{key!r} "
                            f"(known: {', '.join(sorted(known))})")
    out = {}
    for s in settings:
        if s.key not in data:
            out[s.key] = _copy_default(s)
            continue
        value = data[s.key]
        sub = f"{table}.{s.key}" if table else s.key
        def err(msg: str, s: Setting = s) -> UserError:
            line = key_line(text, table, s.key, index)
            return UserError(f"{path}:{line}: {where}{s.key}: {msg}")
        if s.kind == "raw":
            out[s.key] = value
            continue
        ok = isinstance(value, _PY_TYPES[s.kind]) and not (
            s.kind in ("int", "float") and isinstance(value, bool))
        if not ok:
            raise err(f"expected {_TYPE_NAMES[s.kind]}, got {type(value).__name__}")
        if s.kind == "list":
            wrong = [v for v in value if not isinstance(v, str)]
            if wrong:
                raise err(f"expected a list of strings, got {wrong[0]!r}")
        if s.kind == "size":
            try:
                value = parse_size(value)
            except ValueError as exc:
                raise err(str(exc)) from None
        if s.choices and value not in s.choices:
            raise err(f"{value!r} is not one of {', '.join(s.choices)}")
        if s.kind == "table" and s.fields:
            value = validate(value, s.fields, path, text, sub)
        elif s.kind == "tables":
            items = []
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise err("expected an array of tables ([[...]])")
                items.append(validate(item, s.fields, path, text, sub, i) if s.fields else item)
            value = items
        out[s.key] = value
    return out


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "KIB": 1 << 10,
               "MIB": 1 << 20, "GIB": 1 << 30}


def parse_size(value) -> int:
    """Bytes from 8388608, "8388608", "8M" or "8MiB" (K, M, G: powers of 1024, as in mkfs)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"size {value} is negative")
        return value
    text = str(value).strip()
    digits = len(text) - len(text.lstrip("0123456789"))
    number, unit = text[:digits], text[digits:].strip().upper()
    unit = "" if unit == "B" else unit
    if not number.isdigit() or unit not in _SIZE_UNITS:
        raise ValueError(f"{value!r} is not a size (bytes, or a number with K, M, G, KiB, MiB, "
                         "GiB)")
    return int(number) * _SIZE_UNITS[unit]


def _copy_default(s: Setting) -> Any:
    if s.kind == "table" and s.fields and s.default is None:
        return None
    if isinstance(s.default, (list, dict)):
        return type(s.default)(s.default)
    return s.default


def describe(settings, indent: str = "") -> str:
    """Markdown reference generated from a settings table."""
    lines = []
    for s in settings:
        extra = f" One of: {', '.join(s.choices)}." if s.choices else ""
        default = "" if s.default in (None, [], {}, "") else f" Default: `{s.default!r}`."
        lines.append(f"{indent}- `{s.key}` ({s.kind}): {s.help}.{extra}{default}")
        if s.fields:
            lines.append(describe(s.fields, indent + "  "))
    return "\n".join(lines)


def required(data: Optional[Dict[str, Any]], keys, path: Path, text: str, table: str,
             index: int = 0) -> None:
    """Refuse a missing key: at the table's line, or naming the file for a top-level key."""
    for key in keys:
        if data.get(key) is None:
            if not table:
                raise UserError(f"{path}: missing required key {key!r}")
            line = key_line(text, table, "", index)
            raise UserError(f"{path}:{line}: [{table}] needs {key!r}")
