"""Checks on a recipe's device interfaces (`[network] interfaces`) that need several keys at once.

A VLAN is made as `ip link add link PARENT name NAME type vlan id ID`: without `link` that would
read `link None`, so each half needs the other, and the id must be one 802.1Q can carry.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict

from ..errors import UserError
from .toml_lines import key_line

_ARRAY_OF_TABLES = re.compile(r"^\s*\[\[\s*network\s*\.\s*interfaces\s*\]\]", re.MULTILINE)


def _where(path: Path, text: str, key: str, index: int) -> str:
    if _ARRAY_OF_TABLES.search(text):  # [[network.interfaces]]: the key in the index-th table
        return f"{path}:{key_line(text, 'network.interfaces', key, index)}"
    return f"{path}:{key_line(text, 'network', 'interfaces')}"  # interfaces = [{...}]


def check_interfaces(settings: Dict[str, Any], path: Path, text: str) -> None:
    """Refuse, with file:line, an interface whose VLAN keys cannot make a VLAN."""
    network = settings.get("network") or {}
    for i, iface in enumerate(network.get("interfaces") or []):
        name = iface.get("name") or f"#{i + 1}"
        vlan, link = iface.get("vlan"), iface.get("link")
        if vlan is not None and not link:
            raise UserError(f"{_where(path, text, 'vlan', i)}: interface {name}: vlan = {vlan} "
                            "needs link = the parent interface",
                            hint='e.g. link = "eth0"')
        if link and vlan is None:
            raise UserError(f"{_where(path, text, 'link', i)}: interface {name}: link is the "
                            "parent of a VLAN and needs vlan = the VLAN id")
        if vlan is not None and not 1 <= vlan <= 4094:
            raise UserError(f"{_where(path, text, 'vlan', i)}: interface {name}: vlan {vlan} "
                            "is outside 1-4094")
