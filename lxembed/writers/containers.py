"""`--format lxc` and `--format oci`: a container directory (config + rootfs/), written atomically.

DIR/lxc/config + DIR/lxc/rootfs/, and DIR/oci/config.json + DIR/oci/rootfs/. The whole
directory is built beside the old one and swapped in, so a runtime never sees half of it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import List

from ..config import Plan
from ..containers import container_spec
from ..containers.lxc_config import lxc_config
from ..containers.oci import oci_config, unsupported_networks
from ..containers.rootfs import container_tree
from ..log import warn
from ..tree import RootfsTree
from .directory import write_dir
from .output import EXTRA_FORMATS, Artifact, replace_dir_atomic


def _artifact(fmt: str, path: Path, text: bytes, tree: RootfsTree) -> Artifact:
    # Digest over the config and the tree's manifest-relevant content: stable across rebuilds.
    h = hashlib.sha256(text)
    for p, entry in tree:
        h.update(f"{p}\0{entry.type}\0{entry.mode:o}\0{entry.target}\0".encode())
        h.update(entry.sha256().encode())
    return Artifact(fmt, str(path), len(text) + tree.total_bytes(), h.hexdigest())


def write_lxc(tree: RootfsTree, output: Path, plan: Plan, final: Path) -> List[Artifact]:
    spec = container_spec(plan)  # every check before anything is written
    ctree = container_tree(tree, plan, spec)
    dest = Path(output).resolve() / "lxc"
    # The config names the final rootfs path, not the staged one it is written in.
    final_rootfs = Path(final).resolve() / "lxc" / "rootfs"
    text = lxc_config(spec, str(final_rootfs), plan.board.name, plan.recipe.name).encode()

    def fill(tmp: Path) -> None:
        write_dir(ctree, tmp / "rootfs")
        (tmp / "config").write_bytes(text)

    replace_dir_atomic(dest, fill)
    return [_artifact("lxc", dest, text, ctree)]


def write_oci(tree: RootfsTree, output: Path, plan: Plan, final: Path) -> List[Artifact]:
    spec = container_spec(plan)
    ctree = container_tree(tree, plan, spec)
    skipped = unsupported_networks(spec)
    if skipped:
        warn(
            f"an OCI bundle carries no network devices (CNI makes them): {', '.join(skipped)} "
            f"left out of oci/config.json; the container gets an empty network namespace"
        )
    dest = Path(output).resolve() / "oci"
    doc = oci_config(
        spec,
        "rootfs",
        {"org.lxembed.board": plan.board.name, "org.lxembed.recipe": plan.recipe.name},
    )
    text = (json.dumps(doc, indent=2) + "\n").encode()

    def fill(tmp: Path) -> None:
        write_dir(ctree, tmp / "rootfs")
        (tmp / "config.json").write_bytes(text)

    replace_dir_atomic(dest, fill)
    return [_artifact("oci", dest, text, ctree)]


EXTRA_FORMATS["lxc"] = write_lxc
EXTRA_FORMATS["oci"] = write_oci
