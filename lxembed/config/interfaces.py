"""Checks on a recipe's device interfaces (`[network] interfaces`) that need several keys at once.

A VLAN is made as `ip link add link PARENT name NAME type vlan id ID`: without `link` that would
read `link None`, so each half needs the other, and the id must be one 802.1Q can carry. The
check runs on the recipe as merged with its bases (an interface is merged by name, so its
`vlan` and its `link` may come from two files) and names the file and line that define it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import UserError

_HEADER = re.compile(r"^\s*\[")


def _line(text: str, name: str, key: str) -> Optional[int]:
    """The line of `key` in the interface named `name` (inline or [[network.interfaces]])."""
    lines = text.splitlines()
    named = re.compile(r"""\bname\s*=\s*["']%s["']""" % re.escape(name))
    keyed = re.compile(r"(^|[{,\s])%s\s*=" % re.escape(key))
    for number, line in enumerate(lines, 1):
        if not named.search(line):
            continue
        if "{" in line:  # an inline table: its keys are on this line
            return number if keyed.search(line) else None
        for offset, after in enumerate(lines[number:], number + 1):  # this table's keys
            if _HEADER.match(after):
                break
            if keyed.search(after):
                return offset
        return number
    return None


def _where(files: List[Tuple[Path, str]], name: str, key: str) -> str:
    for path, text in files:  # the recipe first, then its bases
        number = _line(text, name, key)
        if number is not None:
            return f"{path}:{number}"
    path, _ = files[0]
    return str(path)


def check_interfaces(settings: Dict[str, Any], files: List[Tuple[Path, str]]) -> None:
    """Refuse, with file:line, an interface whose VLAN keys cannot make a VLAN.

    `files` are (path, text) of the recipe and its bases, the recipe first."""
    network = settings.get("network") or {}
    for i, iface in enumerate(network.get("interfaces") or []):
        name = iface.get("name") or f"#{i + 1}"
        vlan, link = iface.get("vlan"), iface.get("link")
        if vlan is not None and not link:
            raise UserError(f"{_where(files, name, 'vlan')}: interface {name}: vlan = {vlan} "
                            "needs link = the parent interface", hint='e.g. link = "eth0"')
        if link and vlan is None:
            raise UserError(f"{_where(files, name, 'link')}: interface {name}: link is the "
                            "parent of a VLAN and needs vlan = the VLAN id")
        if vlan is not None and not 1 <= vlan <= 4094:
            raise UserError(f"{_where(files, name, 'vlan')}: interface {name}: vlan {vlan} "
                            "is outside 1-4094")
