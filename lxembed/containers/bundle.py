"""The container step of a build: the spec resolved once, before anything is fetched; then the
container tree made from the image tree and written with its LXC config, OCI config.json or
libvirt domain XML."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Dict, List, Optional

from ..config import Plan
from ..log import warn
from ..net.ports import hook_files
from ..tree import RootfsTree
from ..writers.containers import write_bundle
from ..writers.output import Artifact
from .libvirt import check_libvirt, libvirt_domain
from .lxc_config import lxc_config, version_entries
from .oci import oci_config, unsupported_networks
from .rootfs import container_tree
from .spec import ContainerSpec, container_spec

CONTAINER_FORMATS = ("lxc", "oci", "libvirt")


def resolve_bundles(plan: Plan, formats: Sequence[str]) -> Optional[ContainerSpec]:
    """The checked spec when `formats` asks for a container (else None): every error a recipe
    can hold for these runtimes, LXC version limits included, is raised here."""
    wanted = [f for f in formats if f in CONTAINER_FORMATS]
    if not wanted:
        return None
    spec = container_spec(plan)
    if "lxc" in wanted:
        version_entries(spec, "/")  # a setting the LXC version cannot say is refused now
    if "libvirt" in wanted:
        check_libvirt(spec)  # so is one libvirt cannot say; its warnings come with the XML
    return spec


def hook_scripts(spec: ContainerSpec) -> Dict[str, bytes]:
    """{path relative to the bundle: script} of the hooks of ports of a host network
    description that the container's networks name (lxembed.net.ports)."""
    scripts = {}
    for net in spec.networks:
        if net.hooks:
            port, start, stop = net.hooks
            paths = hook_files(port)
            scripts[paths["lxc.hook.start-host"]] = start.encode()
            scripts[paths["lxc.hook.post-stop"]] = stop.encode()
    return scripts


def write_bundles(tree: RootfsTree, plan: Plan, spec: ContainerSpec, formats: Sequence[str],
                  output: Path, final: Path) -> List[Artifact]:
    """Write each container format of `formats` into OUTPUT/FORMAT/.

    `final` is where OUTPUT will be once the staged build is swapped in: the LXC config names
    its rootfs there, not in the stage.
    """
    ctree = container_tree(tree, plan, spec)
    artifacts = []
    if "lxc" in formats:
        rootfs = Path(final).resolve() / "lxc" / "rootfs"
        text = lxc_config(spec, str(rootfs), plan.board.name, plan.recipe.name)
        scripts = hook_scripts(spec)
        artifacts.append(write_bundle(ctree, Path(output) / "lxc", "config", text.encode(), "lxc",
                                      scripts))
    if "oci" in formats:
        skipped = unsupported_networks(spec)
        if skipped:
            warn(f"an OCI bundle carries no network devices (CNI makes them): "
                 f"{', '.join(skipped)} left out of oci/config.json; the container gets an "
                 f"empty network namespace")
        doc = oci_config(spec, "rootfs", {"org.lxembed.board": plan.board.name,
                                          "org.lxembed.recipe": plan.recipe.name})
        text = json.dumps(doc, indent=2) + "\n"
        artifacts.append(write_bundle(ctree, Path(output) / "oci", "config.json", text.encode(),
                                      "oci"))
    if "libvirt" in formats:
        rootfs = Path(final).resolve() / "libvirt" / "rootfs"
        text, notes = libvirt_domain(spec, str(rootfs), plan.board.name, plan.recipe.name)
        for note in notes:
            warn(note)
        artifacts.append(write_bundle(ctree, Path(output) / "libvirt", "domain.xml",
                                      text.encode(), "libvirt"))
    return artifacts
