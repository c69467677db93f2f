"""What an LXC image (`lxc-create -t local`) and an Incus image say about a container.

lxc-create's local template unpacks rootfs.tar.xz, appends meta.tar.xz's `config` to the config
lxc-create wrote (which names the rootfs), adds `lxc.uts.name`, and replaces LXC_NAME, LXC_PATH,
LXC_ROOTFS... in the config and in the rootfs files its `templates` lists. So the config here
leaves out lxc.rootfs.* and lxc.uts.name, and the rootfs's /etc/hostname and /etc/hosts say
LXC_NAME where the container's name goes. Incus reads metadata.yaml and renders its own
templates/ (pongo2) on create and copy. The bytes are lxembed.writers.lxc_image's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Dict

import yaml

from ..config import Plan
from ..errors import UserError
from ..tree import FILE, RootfsTree
from .lxc_config import is_legacy, lxc_entries, render
from .spec import ContainerSpec

# Rootfs files that carry the container's name: lxc-local's `templates`, Incus's templates.
NAMED_FILES = ("/etc/hostname", "/etc/hosts")
# Keys lxc-create and its local template write themselves (the rootfs lxc-create made, the
# name it was given): ours would name the build's paths. lxc.rootfs.managed = 0 would also
# keep lxc-destroy from removing the rootfs lxc-create unpacked.
_LEFT_TO_LXC_CREATE = ("lxc.rootfs.path", "lxc.rootfs.managed", "lxc.uts.name")


@dataclass
class LxcImage:
    meta: Dict[str, bytes]  # meta.tar.xz: config, templates, create-message
    incus: Dict[str, bytes]  # incus.tar.xz: metadata.yaml, templates/*.tpl
    rootfs: RootfsTree  # rootfs.tar.xz: the container's tree, names as LXC_NAME


def check_lxc_image(spec: ContainerSpec) -> None:
    """Refuse what lxc-create's local template or Incus cannot take, before anything is built."""
    if spec.mode == "bind-host":
        raise UserError(
            f"{spec.where('container', 'mode')}: an LXC image of a bind-host container would "
            f"need its host's /usr, and Incus makes no binds from an image",
            hint='use mode = "self-contained" for lxc-image (or --format lxc for bind-host)',
        )
    if is_legacy(spec.lxc_version):
        raise UserError(
            f"{spec.where('container', 'lxc_version')}: lxc-image is for LXC 3.0 and later: "
            f"lxc-create's local template writes lxc.uts.name",
            hint="use --format lxc for an older LXC",
        )
    for i, net in enumerate(spec.networks):
        if net.hooks:
            raise UserError(
                f"{spec.where('container.network', 'port', i)}: a network on a port of a host "
                f"network description needs lxembed's hook scripts beside the config: not in "
                f"an image", hint="use --format lxc, or a bridge link")


def _named(tree: RootfsTree, spec: ContainerSpec, name: str) -> Dict[str, bytes]:
    """NAMED_FILES in `tree` with the recipe's hostname (as a whole word) replaced by `name`."""
    word = re.compile(rf"(?<![\w.-]){re.escape(spec.hostname)}(?![\w.-])")
    out = {}
    for path in NAMED_FILES:
        entry = tree.get(path)
        if entry is not None and entry.type == FILE:
            out[path] = word.sub(name, entry.data.decode()).encode()
    return out


def lxc_image(plan: Plan, spec: ContainerSpec, ctree: RootfsTree) -> LxcImage:
    """The three parts of the image from the container's tree (which stays as it is)."""
    rootfs = RootfsTree(entries=dict(ctree.entries))
    for path, data in _named(ctree, spec, "LXC_NAME").items():
        rootfs.entries[path] = replace(ctree.entries[path], data=data)
    entries = [(k, v) for k, v in lxc_entries(spec, "LXC_ROOTFS")
               if k not in _LEFT_TO_LXC_CREATE]
    header = [
        f"LXC_NAME: lxembed container {spec.name} ({plan.board.name}/{plan.recipe.name}), "
        f"{spec.mode}, init {spec.init}",
        f"stop: lxc-stop -n LXC_NAME sends {spec.signals['halt']}",
    ]
    meta = {
        "config": render(entries, header).encode(),
        "templates": "".join(f"{p}\n" for p in NAMED_FILES if p in rootfs).encode(),
        "create-message": (
            f"lxembed {plan.board.name}/{plan.recipe.name}: {spec.init} init, ready when "
            f"/run/lxembed/ready exists.\nStart it with lxc-start -n NAME.\n").encode(),
    }
    incus_templates = {f"templates/{p.rsplit('/', 1)[1]}.tpl": data
                       for p, data in _named(ctree, spec, "{{ instance.name }}").items()}
    meta_yaml = {
        "architecture": spec.arch.incus,
        "creation_date": plan.epoch,
        "properties": {
            "architecture": spec.arch.incus,
            "description": f"lxembed {plan.board.name}/{plan.recipe.name}: "
                           f"{plan.recipe.settings.get('description') or spec.name}",
            "name": spec.name,
            "os": "lxembed",
            "release": plan.board.suite,
            "variant": spec.init,
            "serial": str(plan.epoch),
        },
        "templates": {
            p: {"when": ["create", "copy"], "create_only": False,
                "template": f"{p.rsplit('/', 1)[1]}.tpl", "properties": {}}
            for p in NAMED_FILES if f"templates/{p.rsplit('/', 1)[1]}.tpl" in incus_templates
        },
    }
    incus = {"metadata.yaml": yaml.safe_dump(meta_yaml, sort_keys=True).encode(),
             **incus_templates}
    return LxcImage(meta, incus, rootfs)
