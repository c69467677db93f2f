"""The whole build: plan -> tree -> written artifacts, staged and swapped in as one output."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Iterable, List, Optional

from . import __version__
from .compression import decompress, kind_by_magic
from .config import Plan
from .config.container_schema import CONTAINER_FORMATS
from .config.firmware import FirmwareSettings, firmware_settings, is_nand
from .config.loader import find_overlay
from .config.settings import parse_size
from .config.uboot import uboot_settings
from .errors import UserError
from .log import info, step, warn
from .paths import cache_dir
from .reports.size import budget_message, size_report, tree_entries
from .rootfs.build import build_tree
from .rootfs.modules import kernel_modules_tree
from .sources.firmware import package_files
from .sources.kernel import Kernel, fetch_kernel
from .sources.kernel_config import KernelConfig, check_recipe, read_config, recipe_needs
from .writers import Artifact, write_formats
from .writers.disk import DISK_FORMATS, STORAGE_MODULES, BootInputs
from .writers.firmware import FIRMWARE_MODULES
from .writers.firmware_ubi import NAND_MODULES
from .writers.fit import FitInputs, key_bits
from .writers.output import check_formats as check_image_formats
from .writers.output import known_formats
from .writers.staging import STAMP, OutputStage

DEFAULT_FORMATS = ("cpio.zst",)
_PACKAGE = Path(__file__).resolve().parent


def default_output(plan: Plan) -> Path:
    return Path("out") / f"{plan.board.name}-{plan.recipe.name}"


def check_formats(formats: Sequence[str]) -> None:
    """Refuse a format that is neither an image writer's nor a container bundle."""
    check_image_formats(formats, also=CONTAINER_FORMATS)


def artifact_path(output: Path, fmt: str) -> Path:
    """Where a format lands in an output directory."""
    if fmt in CONTAINER_FORMATS:
        return output / CONTAINER_FORMATS[fmt]
    return output / ("rootfs" if fmt == "dir" else f"rootfs.{fmt}")


def build_image(plan: Plan, output: Optional[Path] = None, formats: Sequence[str] = DEFAULT_FORMATS,
                mirror: Optional[str] = None, kernel: Optional[Kernel] = None) -> List[Artifact]:
    """Build `formats` into OUTPUT as one whole: on any failure OUTPUT is the previous build."""
    check_formats(formats)
    budgets(plan)  # a bad budget is an error before anything is built
    # Containers' modules (runtimes, image writers, the network) are imported when a build
    # has containers: a warm busybox build spends a third of its time importing otherwise.
    spec = None
    if any(f in CONTAINER_FORMATS for f in formats):
        from .containers.bundle import resolve_bundles
        spec = resolve_bundles(plan, formats)  # every container error before a fetch
    output = Path(output or default_output(plan))
    image_formats = [f for f in formats if f not in CONTAINER_FORMATS]
    # What the recipe needs of the board's kernel, before building; a recipe that needs nothing
    # of it does not read its configuration (a warm build is a few hundred milliseconds).
    asks = recipe_needs(plan.recipe.settings) or plan.recipe.settings["modules"]
    kernel_config = board_kernel_config(plan.board, mirror) if image_formats and asks else None
    if kernel_config is not None:
        for note in check_recipe(kernel_config, plan.recipe):
            warn(note)
    # The FIT's board facts and key are checked before anything is built or written.
    # The firmware's first: a board without U-Boot is refused naming the format asked for.
    firmware = firmware_for(plan) if "firmware" in formats else None
    fit = fit_inputs(plan, mirror) if "fit" in formats or "firmware" in formats else None
    with OutputStage(output) as stage:  # checks OUTPUT before the build starts
        tree = build_tree(plan, mirror)
        if plan.recipe.settings.get("service_containers"):
            from .containers.device import add_service_containers
            add_service_containers(tree, plan, lambda cplan: build_tree(cplan, mirror))
        meta = {"board": plan.board.name, "recipe": plan.recipe.name, "arch": plan.arch.debian,
                "suite": plan.board.suite, "source_date_epoch": plan.epoch}
        # A qemu board's kernel modules: a second segment that boots appended to the rootfs;
        # a disk holds them in its root partition and its boot initramfs.
        segment_formats = [f for f in image_formats
                           if f not in DISK_FORMATS and f not in ("fit", "firmware")]
        storage = [m for f in formats if f in DISK_FORMATS or f == "firmware"
                   for m in _storage_modules(plan, f)]
        has_kernel = plan.board.qemu or plan.board.settings["kernel"] is not None
        modules = (kernel_modules_tree(plan, mirror, storage)
                   if has_kernel and image_formats else None)
        boot = BootInputs(modules, _boot_files(plan, mirror) if "sdcard" in formats else {},
                          fit, firmware)
        with step("write " + ",".join(formats)):
            artifacts = write_formats(tree, stage.path, image_formats, plan, meta, boot=boot)
            if modules is not None and segment_formats:
                artifacts += write_formats(modules, stage.path, segment_formats, plan, meta,
                                           "modules")
            if spec is not None:  # the container tree is made from the image tree
                from .containers.bundle import write_bundles
                artifacts += write_bundles(tree, plan, spec, formats, stage.path, final=output)
        check_budgets(plan, tree, artifacts)
        # The kernel pinned as `lxembed test`/`boot` pin it: a build they then boot is current.
        if kernel is None and image_formats and (plan.board.qemu or plan.board.settings["kernel"]):
            kernel = fetch_kernel(plan.board, mirror)
        stamp = {"key": build_key(plan, kernel), "formats": sorted(formats)}
        (stage.path / STAMP).write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    # Artifacts name where they live now, not the stage they were written in.
    for art in artifacts:
        art.path = str(output.absolute() / Path(art.path).relative_to(stage.path))
    return artifacts


def budgets(plan: Plan) -> dict:
    """The recipe's [max_size], format -> bytes; errors name the recipe line."""
    out = {}
    for fmt, value in (plan.recipe.settings.get("max_size") or {}).items():
        try:
            out[fmt] = parse_size(value)
        except ValueError as err:
            raise UserError(f"{plan.recipe.line_of(fmt, 'max_size')}: [max_size] {fmt}: "
                            f"{err}") from None
        if fmt not in known_formats():
            raise UserError(f"{plan.recipe.line_of(fmt, 'max_size')}: [max_size]: unknown "
                            f"format {fmt!r}")
    return out


def check_budgets(plan: Plan, tree, artifacts: Sequence[Artifact]) -> None:
    """Fail the build (the previous output stays) if an image is over its budget."""
    limits = budgets(plan)
    for art in artifacts:
        budget = limits.get(art.format)
        if budget is not None and art.bytes > budget:
            report = size_report(tree_entries(tree), art.path, art.bytes, art.format)
            raise UserError(budget_message(Path(art.path).name, art.bytes, budget, report),
                            hint=f"raise [max_size] {art.format} in the recipe, or drop what "
                                 "you can spare")


def _storage_modules(plan: Plan, fmt: str) -> List[str]:
    """The modules a disk format's boot initramfs loads to reach its root."""
    if fmt == "firmware":  # NAND: UBI's modules as well (writers/firmware_ubi.py)
        return list(FIRMWARE_MODULES) + (list(NAND_MODULES) if is_nand(plan.board) else [])
    if fmt == "sdcard":
        sdcard = plan.board.settings.get("sdcard") or {}
        return list(sdcard.get("modules") or []) + list(STORAGE_MODULES["ext4"][2:])
    return list(STORAGE_MODULES[fmt.partition(".")[2]])


def _boot_files(plan: Plan, mirror: Optional[str]) -> dict:
    """An SD card's boot partition: the firmware package's files, the kernel, the device tree."""
    sdcard = plan.board.settings.get("sdcard")
    if sdcard is None:
        return {}  # the writer says what is missing
    kernel = fetch_kernel(plan.board, mirror)
    files = {}
    if sdcard["firmware_package"]:
        files.update(package_files(plan.board, sdcard["firmware_package"],
                                   sdcard["firmware_dir"], mirror))
    files["vmlinuz"] = kernel.image.read_bytes()
    if sdcard["dtb"]:
        files[os.path.basename(sdcard["dtb"])] = kernel.dtb(sdcard["dtb"]).read_bytes()
    return files


def fit_inputs(plan: Plan, mirror: Optional[str]) -> FitInputs:
    """The fit format's kernel, device tree and key, from the board's [uboot] and the recipe's
    [fit]."""
    uboot = uboot_settings(plan.board, "the fit format")
    key = (plan.recipe.settings.get("fit") or {}).get("key")
    where = plan.recipe.line_of("key", "fit") if key else ""
    key_dir = (plan.recipe.path.parent / key) if key else None
    if key_dir is not None and not key_dir.is_dir():
        raise UserError(f"{where}: [fit] key {key}: no such directory "
                        f"(relative to {plan.recipe.path.parent})")
    if key_dir is not None:
        key_bits(key_dir, where)  # a key pair that is not there: said before the build
    kernel = fetch_kernel(plan.board, mirror)
    dtb = (plan.board.qemu or {}).get("dtb")
    image = kernel.image.read_bytes()
    if kind_by_magic(image) == "gz":  # a board's own arm64 Image.gz: U-Boot boots it unpacked
        image = decompress(image, "gz", str(kernel.image))
    return FitInputs(image, plan.arch.uboot, int(uboot["kernel_load"], 0),
                     kernel.release, kernel.dtb(dtb).read_bytes() if dtb else None, key_dir,
                     where)


def firmware_for(plan: Plan) -> FirmwareSettings:
    """The firmware format's settings; its board facts and key checked before any build."""
    fw = firmware_settings(plan)
    key_bits(fw.key, plan.recipe.line_of("key", "firmware"))
    return fw


def build_key(plan: Plan, kernel: Optional[Kernel] = None) -> str:
    """Everything a build's bytes depend on: the inputs' content, the epoch, lxembed itself."""
    h = hashlib.sha256(json.dumps({"lxembed": __version__, "epoch": plan.epoch,
                                   "kernel": kernel.pin() if kernel else None}).encode())
    for path in _inputs(plan):
        h.update(str(path).encode() + b"\0")
        try:
            st = path.stat()
            h.update(b"%o\0" % st.st_mode + hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            h.update(b"missing")
    return h.hexdigest()


def _inputs(plan: Plan) -> Iterable[Path]:
    yield plan.board.path.resolve()
    yield from (p.resolve() for p in plan.recipe.sources)
    yield from (Path(d) for d in plan.recipe.settings["debs"])
    for name in plan.recipe.settings["overlays"]:
        yield from sorted(p for p in find_overlay(name).rglob("*") if p.is_file())
    for table in ("fit", "firmware"):  # a signed FIT or bundle changes with its key
        key = (plan.recipe.settings.get(table) or {}).get("key")
        if key:
            yield from sorted(p for p in (plan.recipe.path.parent / key).glob("*")
                              if p.is_file())
    yield from sorted(_PACKAGE.rglob("*.py"))


def image_dir(plan: Plan, output: Optional[str], fmt: str = "") -> Path:
    """--output, or a directory in the cache named after the board, recipe files and format."""
    if output:
        return Path(output)
    key = hashlib.sha256(f"{plan.board.path.resolve()}\n{plan.recipe.path.resolve()}".encode())
    name = f"{plan.board.name}-{plan.recipe.name}-{key.hexdigest()[:8]}"
    return cache_dir() / "images" / (f"{name}-{fmt}" if fmt else name)


def ensure_built(plan: Plan, output: Path, formats: Sequence[str], mirror: Optional[str] = None,
                 kernel: Optional[Kernel] = None, rebuild: bool = False) -> Path:
    """Build into OUTPUT unless it holds these formats built from the same inputs; OUTPUT."""
    output = Path(output)
    if not rebuild and _current(output, formats, build_key(plan, kernel)):
        info(f"{output} is up to date (--rebuild to build it again)")
        return output
    build_image(plan, output, formats, mirror, kernel)
    return output


def _current(output: Path, formats: Sequence[str], key: str) -> bool:
    try:
        stamp = json.loads((output / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return (stamp.get("key") == key and set(formats) <= set(stamp.get("formats", ()))
            and all(os.path.lexists(artifact_path(output, f)) for f in formats))


def ensure_image(plan: Plan, out: Path, fmt: str, mirror: Optional[str],
                 kernel: Optional[Kernel] = None, rebuild: bool = False) -> Path:
    """The path of `fmt` in OUTPUT, built first unless current."""
    return artifact_path(ensure_built(plan, out, [fmt], mirror, kernel, rebuild), fmt)


def board_kernel_config(board, mirror: Optional[str] = None) -> Optional[KernelConfig]:
    """The board's kernel configuration: its `kernel_config` file (a vendor kernel), its own
    [kernel]'s, or the config-KVER in its pinned Debian kernel package; None for none."""
    if board.settings["kernel_config"]:
        return read_config((board.path.parent / board.settings["kernel_config"]).resolve())
    if board.settings["kernel"] is not None:  # its own kernel: [kernel] config, or its package's
        kernel = fetch_kernel(board, mirror)
        return read_config(kernel.config) if kernel.config else None
    if board.qemu is None:
        return None
    kernel = fetch_kernel(board, mirror)
    return read_config(kernel.image.parent / f"config-{kernel.release}")
