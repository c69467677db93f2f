"""The container step of a build: the spec resolved once, before anything is fetched; then the
container tree made from the image tree and written with its LXC config, OCI config.json or
libvirt domain XML, or as an image (OCI layout or archive, LXC/Incus tarballs)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

from ..config import Plan
from ..config.container_schema import CONTAINER_FORMATS
from ..log import warn
from ..net.ports import hook_files
from ..tree import RootfsTree
from ..writers.containers import write_bundle
from ..writers.lxc_image import write_lxc_image
from ..writers.oci_image import oci_image, write_oci_archive, write_oci_layout
from ..writers.output import Artifact, write_file_atomic
from .image import check_oci_image, image_config
from .libvirt import check_libvirt, libvirt_domain
from .lxc_config import lxc_config, version_entries
from .lxc_image import check_lxc_image, lxc_image
from .oci import oci_config, unsupported_networks
from .rootfs import container_tree
from .spec import ContainerSpec, container_spec

# The container formats that are images (CONTAINER_FORMATS: every one, and where it lands).
IMAGE_FORMATS = ("oci-image", "oci-archive", "lxc-image")


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
    if "oci-image" in wanted or "oci-archive" in wanted:
        check_oci_image(plan, spec)
    if "lxc-image" in wanted:
        check_lxc_image(spec)
        version_entries(spec, "/")
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
    if not any(f in formats for f in IMAGE_FORMATS):
        return artifacts
    # An image holds the ids as the container sees them: whoever makes a container of it
    # (podman, Incus, lxc-create in a user namespace) maps them. Only bundles are pre-shifted.
    itree = container_tree(tree, plan, replace(spec, idmap=[])) if spec.idmap else ctree
    if "oci-image" in formats or "oci-archive" in formats:
        artifacts += _write_oci_images(itree, plan, spec, formats, Path(output))
    if "lxc-image" in formats:
        image = lxc_image(plan, spec, itree)
        artifacts.append(write_lxc_image(image.meta, image.incus, image.rootfs,
                                         Path(output) / CONTAINER_FORMATS["lxc-image"],
                                         plan.epoch))
    return artifacts


def _write_oci_images(ctree: RootfsTree, plan: Plan, spec: ContainerSpec,
                      formats: Sequence[str], output: Path) -> List[Artifact]:
    """The layer is made once for both the layout and the archive."""
    config, platform = image_config(plan, spec)
    image = oci_image(ctree, config, check_oci_image(plan, spec), platform)
    artifacts = []
    if "oci-image" in formats:
        artifacts.append(write_oci_layout(image, output / CONTAINER_FORMATS["oci-image"]))
    if "oci-archive" in formats:
        art = write_file_atomic(output / CONTAINER_FORMATS["oci-archive"],
                                lambda fh: write_oci_archive(image, fh, plan.epoch))
        art.format = "oci-archive"
        artifacts.append(art)
    return artifacts
