"""The lxembed Python init in a tree: its code behind one shim, and the JSON config it reads.

The one place that installs lxembed/init/lxinit.py, for both places it runs from:
- an image's own cut-down python3.11: the shim is /sbin/init and the code an unchecked-hash
  .pyc, so nothing is compiled at boot (about 1 s on a mipsel board);
- a bind-host container, run by the python3 of the root it binds: which Python that is is not
  ours to fix, so the code is its zlib-compressed source, without comments and docstrings
  (17 KB instead of 83: the rootfs stays under 100 KB) under /.lxembed. zlib and marshal are
  built into CPython: the shim imports nothing else (a zip app would cost 6 ms per start for
  runpy's imports).
An image's init reads /etc/lxembed/init.json, its default; a bind-host container's is given
--config /.lxembed/init.json (no /etc/lxembed directory: 4 KB less). Both come from
init_config(), from the Plan (and the ContainerSpec for a container).
"""

from __future__ import annotations

import ast
import functools
import json
import zlib
from pathlib import Path
from typing import Any, Dict, Optional, Protocol, Sequence

from ..config import Plan
from ..config.firmware import FIRMWARE_COMMAND
from ..config.schema import INTERFACE_FIELDS, PROBE_FIELDS, SERVICE_FIELDS
from ..errors import UserError
from ..sources.apt import PackageSource
from ..tree import RootfsTree
from .python import add_python_runtime, compile_pyc, suite_python

INIT_SOURCE = Path(__file__).resolve().parents[1] / "init" / "lxinit.py"
CONFIG_PATH = "/etc/lxembed/init.json"  # the init's default
IMAGE_SHIM = "/sbin/init"
IMAGE_CODE = "/usr/lib/lxembed/lxinit.pyc"

# A shebang takes one argument, so -I -S is written "-IS". {load} makes `code` from `data`.
_SHIM = """#!{python} -IS
# lxembed: runs the lxembed init (docs/init.md) from {path}
import {modules}
with open("{path}", "rb") as f:
    data = f.read()
{load}
exec(code, {{"__name__": "__main__", "__file__": "{path}"}})
"""
_LOAD = {
    "bytecode": ("marshal", "code = marshal.loads(data[16:])  # after the .pyc header"),
    "source": ("zlib", 'code = compile(zlib.decompress(data), "{path}", "exec")'),
}

# The recipe tables copied into init.json, field by field as the schema defines them: a field
# added to the schema reaches the init with no change here. Empty values are the init's own
# defaults and are left out; `user = "root"` too (the init is root: no passwd lookup).
_SERVICE_KEYS = tuple(s.key for s in SERVICE_FIELDS)
_INTERFACE_KEYS = tuple(s.key for s in INTERFACE_FIELDS)
# Probe settings the init defaults to itself (the same values): left out of init.json.
_PROBE_DEFAULTS = {s.key: s.default for s in PROBE_FIELDS}


class ContainerSpec(Protocol):
    """What the config needs of a lxembed.containers.ContainerSpec (containers build on this
    module, not the other way round)."""

    hostname: str


def init_source() -> bytes:
    if not INIT_SOURCE.is_file():
        raise UserError(f"{INIT_SOURCE} is missing: the Python init is not installed",
                        hint='use init = "busybox"')
    return INIT_SOURCE.read_bytes()


def shim(python: str, path: str, form: str) -> str:
    """The shim that runs the init's code at `path` with `python`; form: bytecode or source."""
    module, load = _LOAD[form]
    return _SHIM.format(python=python, path=path, modules=module, load=load.format(path=path))


def install_init(tree: RootfsTree, epoch: int, python: str, shim_path: str, code_path: str,
                 form: str, bytecode: Optional[bytes] = None) -> None:
    """Write the init's code (as `form`) at `code_path` and its shim at `shim_path`;
    `bytecode`: the init compiled for the image's own Python (default: the host's)."""
    source = init_source()
    if form == "bytecode":
        code = bytecode or compile_pyc(source, "lxinit.py")
    else:
        code = zlib.compress(compact_source(source), 9)
    tree.write(code_path, code, mtime=epoch, origin="lxembed init")
    tree.write(shim_path, shim(python, code_path, form).encode(), mode=0o755, mtime=epoch,
               origin="lxembed init")


@functools.lru_cache(maxsize=2)  # the same init for every container of a build (~50 ms)
def compact_source(source: bytes) -> bytes:
    """The init's source without comments and docstrings (ast.unparse): it is compiled by
    whatever Python the container's root has, so it travels as source; this keeps a bind-host
    rootfs a few blocks smaller (24.7 -> 16.6 KB compressed)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            body[0].value.value = ""
    return (ast.unparse(tree) + "\n").encode()


def add_python_init(tree: RootfsTree, plan: Plan, source: PackageSource) -> None:
    """An image's init: a minimal python3.X of the board's suite, the init as /sbin/init
    (and /init), its config."""
    bytecode = add_python_runtime(tree, plan, source, init_source(), "lxinit.py")
    install_init(tree, plan.epoch, suite_python(plan).binary, IMAGE_SHIM, IMAGE_CODE,
                 "bytecode", bytecode)
    tree.remove("/init")
    tree.symlink("/init", IMAGE_SHIM, mtime=plan.epoch, origin="init")
    write_init_config(tree, plan)


def _copy(table: Dict[str, Any], keys, keep=()) -> Dict[str, Any]:
    return {k: table[k] for k in keys
            if k in table and (k in keep or table[k] not in (None, [], {}, False))}


def _interface(iface: Dict[str, Any]) -> Dict[str, Any]:
    item = _copy(iface, _INTERFACE_KEYS, keep=("dhcp",))
    item.pop("wait", None)
    if iface.get("wait") is False:  # the init waits by default: said only when it does not
        item["wait"] = False
    return item


def _service(svc: Dict[str, Any]) -> Dict[str, Any]:
    item = _copy(svc, _SERVICE_KEYS + ("container", "stop_signal"))
    if item.get("user") == "root":
        item.pop("user")
    for key, default in _PROBE_DEFAULTS.items():
        if key in item and item[key] == default:
            del item[key]
    return item


def init_firmware_config(table: Dict[str, Any]) -> Dict[str, Any]:
    """The init's "firmware" key from the recipe's [firmware] (lxinit.py: mark good, trial)."""
    return {"mark_good": [FIRMWARE_COMMAND, "mark-good"],
            "trial_timeout": float(table["trial_timeout"])}


def init_config(plan: Plan, spec: Optional[ContainerSpec] = None,
                more_services: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
    """The JSON the init reads (docs/init.md), for an image, or a container when `spec` is set.

    A container's runtime makes its interfaces and its host's kernel has the modules: a
    container's config has neither, nor the device's rescue shell.
    """
    r = plan.recipe.settings
    config: Dict[str, Any] = {
        "hostname": spec.hostname if spec is not None else r["hostname"],
        "mode": "container" if spec is not None else "auto",
        "services": [_service(svc) for svc in list(r["services"]) + list(more_services)],
    }
    if spec is None:
        interfaces = (r.get("network") or {}).get("interfaces", [])
        config["modules"] = list(r["modules"])
        config["network"] = {"interfaces": [_interface(i) for i in interfaces]}
        config["rescue_shell"] = True
        if r.get("watchdog"):
            config["watchdog"] = dict(r["watchdog"])
        if r.get("firmware"):
            config["firmware"] = init_firmware_config(r["firmware"])
    return config


def write_init_config(tree: RootfsTree, plan: Plan, spec: Optional[ContainerSpec] = None,
                      path: str = CONFIG_PATH,
                      more_services: Sequence[Dict[str, Any]] = ()) -> None:
    """The init's config in `tree`; `more_services`: services the build adds (a device's
    service containers), after the recipe's own."""
    text = json.dumps(init_config(plan, spec, more_services), indent=1, sort_keys=True) + "\n"
    tree.write(path, text.encode(), mtime=plan.epoch, origin="init config")
