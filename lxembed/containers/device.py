"""Service containers of a device: containers resolved against the DEVICE's own tree.

A device recipe lists `[[service_containers]]`, each naming a container recipe. A bind-host one
is resolved against the device image being built (its /usr, and /bin, /lib, /sbin where the
device has real directories), never against the build host; a self-contained one brings its own
tree. Each lands where LXC looks by default:
/var/lib/lxc/NAME/config and /var/lib/lxc/NAME/rootfs. Each is a service of the device's own
init (`lxc-start -F`, so its LXC monitor is the service's process): started after the device's
oneshots and what it names in `after`/`requires`, ready by its init's ready file or its
health command, restarted with backoff, stopped in reverse dependency order.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..config import Plan, load_recipe
from ..config.schema import PROBE_FIELDS
from ..errors import UserError
from ..net.hooks import lxc_hook_scripts
from ..net.model import NetworkModel
from ..net.ports import hook_files
from ..rootfs.build import device_description
from ..rootfs.python_init import IMAGE_CODE, shim, write_init_config
from ..tree import DIR, FILE, HARDLINK, SYMLINK, RootfsTree
from .bundle import hook_scripts
from .lxc_config import lxc_config
from .rootfs import container_tree
from .spec import HOST_PYTHON, LXINIT_CODE, LXINIT_SHIM, ContainerSpec, container_spec

LXC_PATH = "/var/lib/lxc"  # lxc-ls, lxc-info -n NAME and lxc-attach -n NAME need no -P
READY_FILE = "/run/lxembed/ready"  # the Python init's, inside the container


def add_service_containers(tree: RootfsTree, plan: Plan, build_tree) -> List[str]:
    """Resolve, build and add every service container of the device recipe; their names.

    `build_tree(plan)` builds a recipe's own tree (the pipeline's, passed in to keep the
    import direction: the container step sits after tree assembly).
    """
    entries = plan.recipe.settings.get("service_containers") or []
    if not entries:
        return []
    with tempfile.TemporaryDirectory(prefix="lxembed-device-root-") as probe:
        _probe_root(tree, Path(probe))
        specs = []
        for entry in entries:
            recipe = load_recipe(entry["recipe"])
            cplan = Plan(plan.board, recipe, plan.epoch)
            spec = container_spec(cplan, root=Path(probe), root_arch=plan.arch)
            spec.name = entry["name"]
            specs.append((entry, cplan, spec))
    network = device_description(plan)  # read once for every container's hooks
    for _, cplan, spec in specs:
        _add_one(tree, plan, cplan, spec, build_tree(cplan), network)
    services = [container_service(entry, spec, plan.recipe.settings["services"])
                for entry, _, spec in specs]
    write_init_config(tree, plan, more_services=services)
    return [spec.name for _, _, spec in specs]


def _device_hooks(spec: ContainerSpec, model: Optional[NetworkModel]) -> Dict[str, bytes]:
    """The container's LXC hooks; for a port of the device's own network, whose table the
    device loads at boot with its network, the hooks that leave the table alone."""
    scripts = hook_scripts(spec)
    for net in spec.networks if model is not None else ():
        if not net.hooks:
            continue
        port, start, stop = net.hooks
        try:
            same = lxc_hook_scripts(model, port) == (start, stop)
        except UserError:
            same = False
        if not same:  # a port of another description: its hooks load its table
            continue
        start, stop = lxc_hook_scripts(model, port, preloaded=True)
        paths = hook_files(port)
        scripts[paths["lxc.hook.start-host"]] = start.encode()
        scripts[paths["lxc.hook.post-stop"]] = stop.encode()
    return scripts


def container_service(entry: Dict[str, Any], spec: ContainerSpec,
                      device_services: List[Dict[str, Any]]) -> Dict[str, Any]:
    """A service container as a service of the device's init (docs/init.md)."""
    service = {"name": spec.name, "container": spec.name, "type": "respawn",
               # The device's network (its oneshots) first, as for any container start.
               "after": [s["name"] for s in device_services if s["type"] == "oneshot"]
               + [a for a in entry["after"]],
               "requires": list(entry["requires"]), "stop_timeout": entry["stop_timeout"],
               "stop_signal": spec.signals["halt"]}
    if spec.init == "python":  # lxembed's init says when its services are up
        service["ready_file"] = READY_FILE
    for setting in PROBE_FIELDS:
        service[setting.key] = entry[setting.key]
    return service


def _probe_root(tree: RootfsTree, root: Path) -> None:
    """The device tree's shape on disk: directories, symlinks, and empty stand-ins for files
    (the probes look at names and links, never at file content)."""
    for path, entry in tree:
        dest = root / path.lstrip("/")
        if path == "/":
            continue
        if entry.type == DIR:
            dest.mkdir(exist_ok=True)
        elif entry.type == SYMLINK:
            os.symlink(entry.target, dest)
        elif entry.type in (FILE, HARDLINK):
            dest.touch()


def _add_one(tree: RootfsTree, plan: Plan, cplan: Plan, spec: ContainerSpec,
             own_tree: RootfsTree, network: Optional[NetworkModel]) -> None:
    base = f"{LXC_PATH}/{spec.name}"
    ctree = container_tree(own_tree, cplan, spec)
    if spec.mode == "bind-host" and spec.init == "python" and tree.get(IMAGE_CODE) is not None:
        # The device's own init, as bytecode, is in the /usr the container binds: its shim runs
        # that, instead of compiling a copy of the source at every start (~0.5 s under TCG).
        ctree.remove(LXINIT_CODE)
        ctree.write(LXINIT_SHIM, shim(HOST_PYTHON, IMAGE_CODE, "bytecode").encode(), mode=0o755,
                    mtime=plan.epoch, origin="lxembed init")
    for path, entry in ctree:
        if path == "/":
            tree.mkdir(f"{base}/rootfs", mode=entry.mode, mtime=plan.epoch,
                       origin=f"container {spec.name}")
        else:
            tree.add(f"{base}/rootfs{path}", entry)
    text = lxc_config(spec, f"{base}/rootfs", plan.board.name, cplan.recipe.name)
    tree.write(f"{base}/config", text.encode(), mtime=plan.epoch,
               origin=f"container {spec.name}")
    for path, script in _device_hooks(spec, network).items():  # its port's MAC, by LXC hooks
        tree.write(f"{base}/{path}", script, mode=0o755, mtime=plan.epoch,
                   origin=f"container {spec.name}")
