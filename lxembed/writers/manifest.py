"""manifest.json: every entry's path, type, mode, owner, size and sha256."""

from __future__ import annotations

import json

from ..tree import BLOCK, CHAR, RootfsTree


def manifest(tree: RootfsTree, meta: dict) -> bytes:
    entries = []
    for path, e in tree:
        item = {"path": path, "type": e.type, "mode": f"{e.mode & 0o7777:04o}",
                "owner": f"{e.uid}:{e.gid}", "size": e.size}
        if e.type == "file":
            item["sha256"] = e.sha256()
        elif e.type in ("symlink", "hardlink"):
            item["target"] = e.target
        elif e.type in (CHAR, BLOCK):
            item["device"] = f"{e.major}:{e.minor}"
        if e.origin:
            item["origin"] = e.origin
        entries.append(item)
    return (json.dumps({**meta, "entries": entries}, indent=1, sort_keys=True) + "\n").encode()
