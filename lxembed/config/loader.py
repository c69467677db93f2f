"""Load boards and recipes by name (or path) into a validated Plan."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..arch import Arch, get_arch
from ..errors import UserError
from ..suites import SUITES
from .interfaces import check_interfaces
from .product import find_file, find_overlay, names, project_dirs  # noqa: F401 (imported from here)
from .schema import BOARD_SETTINGS, RECIPE_SETTINGS, SERVICE_FIELDS
from .settings import required, validate
from .toml_lines import key_line, parse

# The script that makes the device's own network from its [host_network] (lxembed.net.device)
DEVICE_NETWORK_SCRIPT = "/etc/lxembed/network.sh"
DEFAULT_EPOCH = 1704067200  # 2024-01-01T00:00:00Z, when SOURCE_DATE_EPOCH is not set


def list_boards() -> List[str]:
    return names("boards")


def list_recipes() -> List[str]:
    return names("recipes")


@dataclass
class Board:
    name: str
    path: Path
    arch: Arch
    suite: str
    settings: Dict[str, Any]

    @property
    def qemu(self) -> Optional[Dict[str, Any]]:
        return self.settings["qemu"]


@dataclass
class Recipe:
    name: str
    path: Path
    settings: Dict[str, Any]
    text: str  # source, to point at lines in later errors
    sources: List[Path]  # this file and every base it extends

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["settings"][key]
        except KeyError:
            raise AttributeError(key) from None

    def line_of(self, key: str, table: str = "") -> str:
        return f"{self.path}:{key_line(self.text, table, key)}"


@dataclass
class Plan:
    board: Board
    recipe: Recipe
    epoch: int

    @property
    def arch(self) -> Arch:
        return self.board.arch


def load_board(name: str) -> Board:
    path = find_file("boards", name)
    data, text = parse(path)
    settings = validate(data, BOARD_SETTINGS, path, text)
    required(settings, ["arch"], path, text, "")
    if settings["qemu"] is not None:
        required(settings["qemu"], [], path, text, "qemu")
    if settings["kernel"] is not None:
        _check_kernel_table(settings, path, text)
    arch = get_arch(settings["arch"])
    _check_suite(settings["suite"], arch, path, text)
    return Board(path.stem, path, arch, settings["suite"], settings)


def _check_suite(name: str, arch: Arch, path: Path, text: str) -> None:
    """A suite lxembed knows, that has the board's architecture (lxembed/suites.py)."""
    where = f"{path}:{key_line(text, '', 'suite')}"
    if name not in SUITES:
        raise UserError(f"{where}: unknown Debian suite {name!r} (known: {', '.join(SUITES)})")
    if arch.debian not in SUITES[name].arches:
        having = [s.name for s in SUITES.values() if arch.debian in s.arches]
        raise UserError(f"{where}: Debian {name} has no {arch.debian} (userland and kernel)",
                        hint=f"suite = \"{having[-1]}\"" if having else "")


def _check_kernel_table(settings: Dict[str, Any], path: Path, text: str) -> None:
    """[kernel]: a package or an image with its modules, files that exist (made absolute), and
    no second way of naming the kernel or its config."""
    kernel = settings["kernel"]
    def where(key: str, table: str = "kernel") -> str:
        return f"{path}:{key_line(text, table, key)}"
    if bool(kernel["package"]) == bool(kernel["image"]):
        raise UserError(f"{where('')}: [kernel] names its kernel by `package` (a .deb) or by "
                        "`image` and `modules` (files): one of the two")
    if kernel["package"] and kernel["modules"]:
        raise UserError(f"{where('modules')}: [kernel] modules: the package holds the kernel's "
                        "modules; `modules` goes with `image`")
    if kernel["image"] and not kernel["modules"]:
        raise UserError(f"{where('')}: [kernel] image needs `modules` (its `make "
                        "modules_install` tree, a directory or a tarball)")
    if settings["kernel_config"]:
        raise UserError(f"{where('kernel_config', '')}: kernel_config: the board has a "
                        "[kernel]; give its config as [kernel] config")
    if (settings["qemu"] or {}).get("kernel_package"):
        raise UserError(f"{where('kernel_package', 'qemu')}: [qemu] kernel_package: the board "
                        "boots its own [kernel]")
    for key in ("package", "image", "modules", "config", "dtbs"):
        if not kernel[key]:
            continue
        file = (path.parent / kernel[key]).resolve()
        wanted_dir = key == "dtbs" or (key == "modules" and not _is_tarball(kernel[key]))
        if key == "modules" and wanted_dir and file.is_file():
            raise UserError(f"{where(key)}: [kernel] modules: {file} is neither a directory nor "
                            "a tarball (.tar, .tar.gz, .tar.xz, .tar.zst)")
        if not (file.is_dir() if wanted_dir else file.is_file()):
            what = "directory" if wanted_dir else "file"
            raise UserError(f"{where(key)}: [kernel] {key}: no such {what} {file}")
        kernel[key] = str(file)


def _is_tarball(name: str) -> bool:
    return name.endswith((".tar", ".tar.gz", ".tar.xz", ".tar.zst"))


def _named(items: List[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and i.get("name") for i in items)


def _merge_lists(old: List[Any], new: List[Any]) -> List[Any]:
    """Append what is new; a named item (interface, service, user) replaces its namesake."""
    if _named(old) and _named(new):
        by_name = {item["name"]: item for item in new}
        merged = [by_name.pop(item["name"], item) for item in old]
        return merged + [item for item in new if item["name"] in by_name]
    return old + [v for v in new if v not in old]


def _merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if key == "base":
            continue
        old = out.get(key)
        if isinstance(old, list) and isinstance(value, list):
            out[key] = _merge_lists(old, value)
        elif isinstance(old, dict) and isinstance(value, dict):
            out[key] = _merge(old, value)
        else:
            out[key] = value
    return out


def load_recipe(name: str, _seen: tuple = (), _named_by: Optional[Path] = None) -> Recipe:
    path = find_file("recipes", name, _named_by)
    if path.resolve() in _seen:
        raise UserError(f"{path}: recipe bases form a loop")
    data, text = parse(path)
    settings = validate(data, RECIPE_SETTINGS, path, text)
    # Local .debs are relative to the file that names them, also when another recipe extends it.
    settings["debs"] = [str((path.parent / d).resolve()) for d in settings["debs"]]
    for entry in settings["service_containers"]:  # a path is relative to the file naming it
        if entry["recipe"] and ("/" in entry["recipe"] or entry["recipe"].endswith(".toml")):
            entry["recipe"] = str((path.parent / entry["recipe"]).resolve())
    sources = [path]
    if settings["base"]:
        base = load_recipe(settings["base"], _seen + (path.resolve(),), path)
        explicit = {k: v for k, v in settings.items() if k in data}
        settings = _merge(base.settings, explicit)
        sources += base.sources
    for table, keys in (("users", ["name", "uid"]), ("services", ["name", "command"]),
                        ("checks", ["name", "command"]),
                        ("service_containers", ["name", "recipe"])):
        for i, item in enumerate(settings[table]):
            required(item, keys, path, text, table, i)
    if not _seen and settings["host_network"] is not None and settings["container"] is None:
        settings["services"] = [_device_network_service(path, text)] + [
            s for s in settings["services"] if s["name"] != "device-network"]
    if not _seen and settings["service_containers"]:
        _check_service_containers(settings, path, text)
    if not _seen:  # the recipe as built, with its bases merged in
        check_interfaces(settings, [(path, text)] + [(p, p.read_text(encoding="utf-8"))
                                                     for p in sources[1:]])
    _one_main_service(settings["services"], data.get("services") or [], path, text)
    return Recipe(path.stem, path, settings, text, sources)


def _device_network_service(path: Path, text: str) -> Dict[str, Any]:
    """An image whose recipe describes a network makes it at boot, before anything else."""
    service = {"name": "device-network", "command": ["/bin/sh", DEVICE_NETWORK_SCRIPT],
               "type": "oneshot"}
    return validate(service, SERVICE_FIELDS, path, text, "services")


def _check_service_containers(settings: Dict[str, Any], path: Path, text: str) -> None:
    """Service containers are services of the device's Python init: their names are their
    own, and what they wait for exists."""
    if settings["init"] != "python":
        raise UserError(f"{path}:{key_line(text, 'service_containers', '')}: service "
                        "containers are supervised by the Python init", hint='set init = "python"')
    services = {s["name"] for s in settings["services"]}
    containers = [c["name"] for c in settings["service_containers"]]
    for i, entry in enumerate(settings["service_containers"]):
        if entry["name"] in services or containers.count(entry["name"]) > 1:
            raise UserError(f"{path}:{key_line(text, 'service_containers', 'name', i)}: "
                            f"{entry['name']!r} names another service or container too")
        for key in ("after", "requires"):
            unknown = [n for n in entry[key] if n not in services and n not in containers]
            if unknown or entry["name"] in entry[key]:
                what = ", ".join(unknown) or entry["name"]
                raise UserError(f"{path}:{key_line(text, 'service_containers', key, i)}: "
                                f"{key} names {what}: not another service or container "
                                f"(known: {', '.join(sorted(services | set(containers)))})")


def _one_main_service(services: List[Any], own: List[Any], path: Path, text: str) -> None:
    """At most one service is the app whose exit ends the init (docs/init.md)."""
    mains = [svc["name"] for svc in services if svc.get("main")]
    if len(mains) > 1:
        marked = [i for i, svc in enumerate(own) if isinstance(svc, dict) and svc.get("main")]
        line = key_line(text, "services", "main" if marked else "", marked[-1] if marked else 0)
        raise UserError(
            f"{path}:{line}: more than one main service: {', '.join(mains)}",
            hint="at most one service is main: the one whose exit ends the init",
        )


def source_date_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None:
        return DEFAULT_EPOCH
    try:
        return int(value)
    except ValueError:
        raise UserError(f"SOURCE_DATE_EPOCH={value!r} is not an integer") from None


def load_plan(board: str, recipe: str) -> Plan:
    return Plan(load_board(board), load_recipe(recipe), source_date_epoch())
