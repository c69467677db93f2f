"""Assemble a RootfsTree from a Plan: packages, skeleton, applets, init, overlays, files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from ..config import Plan
from ..config.firmware import firmware_settings
from ..config.loader import DEVICE_NETWORK_SCRIPT, find_overlay
from ..config.toml_lines import key_line, parse
from ..elf.closure import check_tree_arch
from ..elf.pick import pick_files
from ..errors import UserError
from ..log import info, progress, step
from ..sources.apt import Deb, PackageSource, UnknownPackage
from ..sources.deb import extract_deb
from ..sources.unpacked import add_packages
from ..suites import empty_root
from ..tree import RootfsTree
from .busybox import add_applet_links
from .firmware import add_firmware_tools
from .overlay import add_overlay
from .python_init import add_python_init
from .skeleton import add_skeleton

if TYPE_CHECKING:  # the network's modules load when a recipe describes one (a warm build
    from ..net.model import NetworkModel  # of any other image does not pay for them)


def build_tree(plan: Plan, mirror: Optional[str] = None) -> RootfsTree:
    recipe, epoch = plan.recipe.settings, plan.epoch
    tree = empty_root(plan.board.suite, plan.arch)
    source = PackageSource(plan.board.suite, plan.arch.debian, mirror,
                           plan.board.settings["components"])
    with step("packages"):
        if recipe["packages"]:
            debs = fetch_named(plan, source, "packages")
            with progress("extract", len(debs)) as advance:
                add_packages(debs, tree, advance)
        for deb in recipe["debs"]:
            extract_deb(_local_deb(plan, deb), tree)
        if recipe["pick"]:
            _add_picked(tree, plan, source)
    removed = tree.exclude(recipe["exclude"])
    add_skeleton(tree, recipe, epoch)
    if tree.get("/bin/busybox") is not None:
        with step("busybox applets"):
            add_applet_links(tree, plan.arch, epoch)
    if recipe.get("firmware") is not None:  # before the applet links: its mke2fs wins
        with step("firmware tools"):
            add_firmware_tools(tree, plan, source, firmware_settings(plan))
    if recipe["init"] == "python":
        with step("python init"):
            add_python_init(tree, plan, source)
    if recipe["host_network"] is not None and recipe["container"] is None:
        _add_device_network(tree, plan)
    elif tree.get("/init") is None and tree.get("/bin/busybox") is not None:
        tree.symlink("/init", "/bin/busybox", mtime=epoch, origin="init")  # initramfs entry point
    for name in recipe["overlays"]:
        add_overlay(tree, find_overlay(name), epoch)
    for path, content in sorted(recipe["files"].items()):
        if not isinstance(content, str):
            raise UserError(f"{plan.recipe.line_of('files')}: files.{path} must be a string")
        try:
            tree.write(path, content.encode(), mode=0o755 if content.startswith("#!") else 0o644,
                       mtime=epoch, origin="recipe files")
        except UserError as err:
            raise UserError(f"{plan.recipe.line_of(path, 'files')}: {err}") from None
    modules = list(recipe["modules"])
    if modules:
        tree.write("/etc/modules", ("\n".join(modules) + "\n").encode(), mtime=epoch,
                   origin="recipe")
    check_tree_arch(tree, plan.arch)  # refuse any ELF that cannot run on the board
    tree.clamp_mtimes(epoch)
    info(f"{plan.board.name}/{plan.recipe.name}: {len(tree)} entries, "
         f"{tree.total_bytes() / 1e6:.2f} MB of files ({removed} excluded)")
    return tree


def fetch_named(plan: Plan, source: PackageSource, key: str) -> List[Deb]:
    """The recipe's `key` list through apt; a package the board's suite lacks is an error at
    the line naming it (in the recipe or the base that lists it)."""
    try:
        return source.fetch(plan.recipe.settings[key])
    except UnknownPackage as err:
        for path in plan.recipe.sources:
            data, text = parse(path)
            if err.package in (data.get(key) or []):
                raise UserError(f"{path}:{key_line(text, '', key)}: {err}",
                                hint=f"{plan.board.name} is Debian {plan.board.suite}: name "
                                f"{plan.board.suite}'s package, or build for a board of "
                                "another suite") from None
        raise


def device_description(plan: Plan) -> Optional[NetworkModel]:
    """The device's own network description (its recipe's [host_network]), or None."""
    if plan.recipe.settings.get("host_network") is None:
        return None
    from ..net.model import load_description
    # The description lives in this recipe or in the base that sets it (lines name that file).
    source = next(p for p in plan.recipe.sources if "host_network" in parse(p)[0])
    return load_description(source)


def _add_device_network(tree: RootfsTree, plan: Plan) -> None:
    """The image's own network, from the recipe's description: made by the init at boot."""
    if plan.recipe.settings["init"] != "python":
        raise UserError(f"{plan.recipe.line_of('host_network')}: the device network is made "
                        'by the Python init at boot: set init = "python"')
    from ..net.device import RULES_FILE, device_rules, device_setup
    from ..net.rules import check as check_rules
    model = device_description(plan)
    rules = device_rules(model)
    check_rules(rules, f"{plan.recipe.path}: [host_network]")
    tree.write(DEVICE_NETWORK_SCRIPT, device_setup(model).encode(), mode=0o755,
               mtime=plan.epoch, origin="device network")
    if rules:
        tree.write(RULES_FILE, rules.encode(), mtime=plan.epoch, origin="device network")


def _local_deb(plan: Plan, name: str) -> Path:
    path = (plan.recipe.path.parent / name).resolve()
    if not path.is_file():
        raise UserError(f"{plan.recipe.line_of('debs')}: {name}: no such .deb file")
    return path


def _add_picked(tree: RootfsTree, plan: Plan, source: PackageSource) -> None:
    full = empty_root(plan.board.suite, plan.arch)
    add_packages(fetch_named(plan, source, "pick_packages"), full)
    picked = pick_files(full, plan.recipe.settings["pick"], plan.recipe.settings["data"], plan.arch)
    for path, entry in picked:
        if path != "/":
            tree.add(path, entry)


