"""A container network that names a port of a description: `[[container.network]] port = "vh-x"`.

The port gives the type, `veth.pair`, `hwaddr`, `link`, the name inside and the addresses, so
the container config and the host's rules can never disagree; a key the recipe also sets must
say the same. A port LXC makes (`created_by = "lxc"`) brings the start-host and post-stop hook
scripts that set its host-side MAC and load its rules.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import UserError
from .hooks import lxc_hook_scripts
from .model import RECIPE_TABLE, NetworkModel, Port, load_description

# LXC config key -> file name beside the config (under hooks/), for a port's scripts.
HOOK_FILES = {"lxc.hook.start-host": "net-{port}-start-host.sh",
              "lxc.hook.post-stop": "net-{port}-post-stop.sh"}


def hook_files(port: str) -> Dict[str, str]:
    """{LXC key: path relative to the bundle directory} of a port's hook scripts."""
    return {key: f"hooks/{name.format(port=port)}" for key, name in HOOK_FILES.items()}


def _description(item: Dict[str, Any], recipe_path: Path, fail) -> NetworkModel:
    if item.get("description"):
        path = Path(item["description"])
        if not path.is_absolute():
            path = recipe_path.parent / path
        if not path.is_file():
            raise fail("description", f"network description {path} does not exist")
        return load_description(path)
    model = load_description(recipe_path)
    if not model.bridges and not model.ports:
        raise fail("port", f"port = {item['port']!r} but no description is named "
                   f"(description = \"FILE\") and the recipe has no [{RECIPE_TABLE}]")
    return model


def _from_port(port: Port, model: NetworkModel) -> Dict[str, Any]:
    """The container network keys a port decides."""
    v4 = [a for a in port.addresses if ipaddress.ip_interface(a).version == 4]
    v6 = [a for a in port.addresses if ipaddress.ip_interface(a).version == 6]
    keys: Dict[str, Any] = {"hwaddr": port.peer_hwaddr, "ipv4": v4, "ipv6": v6}
    if port.created_by == "lxc":
        keys.update(type="veth", veth_pair=port.name, link=port.bridge, name=port.peer)
    else:  # `net up` made the pair; the container takes the peer as a physical device
        keys.update(type="phys", link=port.peer)
    return keys


def resolve_port_networks(items: List[Dict[str, Any]], recipe_path: Path,
                          where: Callable[[int, str], str]) \
        -> Tuple[List[Dict[str, Any]], List[Optional[Tuple[str, str, str]]]]:
    """Fill in the networks that name a port; returns (items, per item: (port, start script,
    stop script) or None). `where(index, key)` gives "file:line"."""
    out, hooks = [], []
    for i, item in enumerate(items):
        item = dict(item)
        port_name = item.pop("port", None)
        description = item.pop("description", None)

        def fail(key: str, message: str, i: int = i) -> UserError:
            return UserError(f"{where(i, key)}: [[container.network]] #{i + 1}: {message}")

        if port_name is None:
            if description is not None:
                raise fail("description", "description names the file of a `port`; give port")
            out.append(item)
            hooks.append(None)
            continue
        model = _description({"port": port_name, "description": description},
                             Path(recipe_path), fail)
        try:
            port = model.port(port_name)
        except UserError as err:
            raise fail("port", str(err).split(": ", 1)[1]) from None
        if port.netns:
            raise fail("port", f"port {port.name}'s peer goes into netns {port.netns} at "
                       "`net up`: a container cannot take it (leave netns out of the port)")
        for key, value in _from_port(port, model).items():
            given = item.get(key)
            if given in (None, []):
                item[key] = value
            elif given != value:
                raise fail(key, f"{key} = {given!r} disagrees with port {port.name} of "
                           f"{model.path} ({value!r}): leave it out, the port decides it")
        bridge = model.bridge(port.bridge)
        if item.get("ipv4_gateway") is None and item["ipv4"] and bridge.ipv4():
            item["ipv4_gateway"] = str(bridge.ipv4()[0].ip)  # the bridge, as for namespaces
        out.append(item)
        if port.created_by == "lxc":
            start, stop = lxc_hook_scripts(model, port.name)
            hooks.append((port.name, start, stop))
        else:
            hooks.append(None)
    return out, hooks
