"""A container bundle directory: a container's tree as rootfs/ plus its config file, one whole.

DIR/lxc/config + DIR/lxc/rootfs/, DIR/oci/config.json + DIR/oci/rootfs/, or
DIR/libvirt/domain.xml + DIR/libvirt/rootfs/. The tree and the config text come made
(lxembed.containers.bundle): this only serialises them. The directory is
built beside the old one and swapped in, so a runtime never sees half of it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, Optional

from ..tree import RootfsTree
from .directory import write_dir
from .output import Artifact, replace_dir_atomic


def _artifact(fmt: str, path: Path, text: bytes, tree: RootfsTree) -> Artifact:
    # Digest over the config and the tree's manifest-relevant content: stable across rebuilds.
    h = hashlib.sha256(text)
    for p, entry in tree:
        h.update(f"{p}\0{entry.type}\0{entry.mode:o}\0{entry.target}\0".encode())
        h.update(entry.sha256().encode())
    return Artifact(fmt, str(path), len(text) + tree.total_bytes(), h.hexdigest())


def write_bundle(tree: RootfsTree, dest: Path, config_name: str, config: bytes,
                 fmt: str, scripts: Optional[Dict[str, bytes]] = None) -> Artifact:
    """Write `tree` as DEST/rootfs/ and `config` as DEST/CONFIG_NAME; `scripts` (relative path
    -> text) are host-side hooks, written executable beside the config, never in the rootfs."""

    def fill(tmp: Path) -> None:
        write_dir(tree, tmp / "rootfs")
        (tmp / config_name).write_bytes(config)
        for rel, text in (scripts or {}).items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text)
            path.chmod(0o755)

    replace_dir_atomic(dest, fill)
    return _artifact(fmt, dest, config, tree)
