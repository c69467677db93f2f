"""`firmware` on a NAND board ([flash] type = "nand"): the A/B layout as volumes of one UBI
image (NAME.firmware.ubi), made with mtd-utils' ubinize, rootless and byte-identical.

The volumes, in this order (ids fixed: /etc/fw_env.config and the boot command name them):
  0 ubootenv   dynamic, 1 LEB   U-Boot environment, first copy   (U-Boot's CONFIG_ENV_IS_IN_UBI
  1 ubootenv2  dynamic, 1 LEB   ... second copy                   with a redundant environment)
  2 kernel_a   dynamic          slot A's signed FIT (kernel, device tree, initramfs)
  3 kernel_b   dynamic, empty   slot B's, written by the first update
  4 rootfs_a   dynamic          slot A's root: squashfs, read through ubiblock
  5 rootfs_b   dynamic, empty
  6 data       dynamic, empty, autoresize: grows over the rest of the flash at the first
               attach; UBIFS formats an empty volume itself at its first mount
Names as OpenWrt's NAND images have them (ubootenv, ubootenv2, kernel, rootfs, rootfs_data),
suffixed per slot. Every volume is dynamic, as OpenWrt's kernel volume is: ubinize cannot make
an empty static volume (kernel_b), and swupdate's ubivol handler rewrites either kind whole.
squashfs is the root, not ext4 (a block filesystem, no wear levelling of its own) nor UBIFS
(a read-only root needs neither its journal nor its write cost).

Unlike the disk layout, U-Boot keeps the boot state itself: the environment lives in the two
env volumes (CONFIG_ENV_UBI_PART = [flash] ubi_mtd, CONFIG_ENV_UBI_VOLUME = "ubootenv",
CONFIG_ENV_UBI_VOLUME_REDUND = "ubootenv2", CONFIG_ENV_SIZE = 0x4000), `saveenv` writes the
older copy with a higher flags counter (libubootenv's rule too), and the factory environment
holds `bootcmd`: the A/B choice with RAUC's variables, the same as the disk's boot.scr.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from ..config.firmware import MIB, FirmwareSettings
from ..errors import UserError
from ..tree import RootfsTree
from .disk import boot_initramfs, merged
from .firmware import _has_module, env_image
from .firmware_boot import ENV_SIZE, SLOTS, initial_env
from .firmware_init import nand_init_script
from .fit import DATA_POSITION, FitInputs, write_fit
from .flash import FlashGeometry, derived_number, run_tool
from .squashfs import SquashfsOptions, write_squashfs

UBI_DEVICE = 0  # /dev/ubi0: the one UBI device, attached from [flash] ubi_mtd
ENV_VOLUMES = ("ubootenv", "ubootenv2")
VOLUME_IDS = {"ubootenv": 0, "ubootenv2": 1, "kernel_a": 2, "kernel_b": 3, "rootfs_a": 4,
              "rootfs_b": 5, "data": 6}
# What the NAND firmware's initramfs loads to reach UBI (the NAND controller's driver is the
# board kernel's, built in on the boards that boot from NAND).
NAND_MODULES = ("mtd", "ubi", "ubifs", "squashfs", "overlay")
# UBI keeps PEBs for itself: the two volume table copies, one for wear levelling, one for
# atomic LEB changes, and bad-block reserve (ubinize's default: 20 per 1024 PEBs).
UBI_RESERVED_PEBS = 4
BAD_BLOCK_PER_1024 = 20


def kernel_volume(slot: str) -> str:
    return f"kernel_{slot.lower()}"


def root_volume(slot: str) -> str:
    return f"rootfs_{slot.lower()}"


def root_block_device(slot: str) -> str:
    """The ubiblock device Linux makes of the slot's root volume (ubi.block=)."""
    return f"/dev/ubiblock{UBI_DEVICE}_{VOLUME_IDS[root_volume(slot)]}"


def env_devices() -> List[str]:
    """libubootenv's names of the two environment copies (/etc/fw_env.config)."""
    return [f"/dev/ubi{UBI_DEVICE}_{VOLUME_IDS[v]}" for v in ENV_VOLUMES]


@dataclass(frozen=True)
class Volume:
    name: str
    size: int  # bytes reserved (whole LEBs)
    image: Optional[Path] = None
    autoresize: bool = False

    @property
    def vol_id(self) -> int:
        return VOLUME_IDS[self.name]


def ubinize_config(volumes: List[Volume]) -> str:
    sections = []
    for v in volumes:
        lines = [f"[{v.name}]", "mode=ubi", f"vol_id={v.vol_id}", "vol_type=dynamic",
                 f"vol_name={v.name}", f"vol_size={v.size}"]
        if v.image is not None:
            lines.append(f"image={v.image}")
        if v.autoresize:
            lines.append("vol_flags=autoresize")
        sections.append("\n".join(lines) + "\n")
    return "\n".join(sections)


def boot_command(fw: FirmwareSettings, fit_addr: str, own_fdt: bool) -> str:
    """`lxembed_boot` (the factory `bootcmd` runs it): one hush line that picks a slot with
    attempts left in BOOT_ORDER, counts the attempt (saveenv, before anything is loaded),
    and boots the slot's FIT with the slot's root volume as Linux's root."""
    parts = ["setenv slot", "for s in ${BOOT_ORDER}; do"]
    for slot in SLOTS:
        parts.append(f"if test -z \"${{slot}}\" && test \"${{s}}\" = {slot} && "
                     f"test ${{BOOT_{slot}_LEFT}} -gt 0; then setexpr BOOT_{slot}_LEFT "
                     f"${{BOOT_{slot}_LEFT}} - 1; setenv slot {slot}; fi")
    parts += ["done",
              # Every slot used up its attempts: start the count again rather than stop.
              f"if test -z \"${{slot}}\"; then echo \"lxembed-boot: no slot has attempts "
              f"left: {fw.tries} each again\"; setenv BOOT_A_LEFT {fw.tries}; "
              f"setenv BOOT_B_LEFT {fw.tries}; saveenv; reset; fi",
              "saveenv"]
    for i, slot in enumerate(SLOTS):
        keyword = "if" if i == 0 else "elif"
        parts.append(f"{keyword} test ${{slot}} = {slot}; then setenv kvol "
                     f"{kernel_volume(slot)}; setenv rvol {root_volume(slot)}; setenv rdev "
                     f"{root_block_device(slot)}; setenv left ${{BOOT_{slot}_LEFT}}")
    parts += ["fi",
              "setenv trial; if test \"${lxembed_trial}\" = \"${slot}\"; then setenv trial "
              "\" lxembed.trial\"; fi",
              "echo \"lxembed-boot: slot ${slot} (volume ${rvol}), ${left} attempts left "
              "after this one\"",
              f"setenv bootargs \"{fw.cmdline} ubi.mtd={fw.ubi_mtd} "
              f"ubi.block={UBI_DEVICE},${{rvol}} root=${{rdev}} lxembed.slot=${{slot}}"
              "${trial}\"",
              f"ubi part {fw.ubi_mtd} && ubi read {fit_addr} ${{kvol}} && bootm "
              f"{fit_addr}#conf-1" + ("" if own_fdt else f" {fit_addr}#conf-1 "
                                      "${fdtcontroladdr}"),
              # A slot whose FIT does not boot: the attempt is counted; the next boot tries on.
              "echo \"lxembed-boot: slot ${slot} did not boot\"", "reset"]
    # `then`/`do` join the next command with a space, everything else with "; ".
    text = ""
    for part in parts:
        text += part if not text else (" " if text.endswith((" then", " do")) else "; ") + part
    return text.replace("; then;", "; then").replace("; do;", "; do")


def factory_env(fw: FirmwareSettings, fit_addr: str, own_fdt: bool) -> str:
    """The factory environment: the boot state (slot A good, B empty) and the boot command."""
    return (initial_env(fw.tries) + "bootdelay=1\nbootcmd=run lxembed_boot\n"
            f"lxembed_boot={boot_command(fw, fit_addr, own_fdt)}\n")


def nand_initramfs(tree: RootfsTree, modules: Optional[RootfsTree], epoch: int) -> RootfsTree:
    """The FIT's initramfs on NAND: busybox, the UBI modules, the NAND /init."""
    boot = boot_initramfs(tree, modules, "squashfs", root_block_device("A"), epoch,
                          [m for m in NAND_MODULES if _has_module(modules, m)])
    boot.write("/init", nand_init_script(UBI_DEVICE).encode(), mode=0o755, mtime=epoch,
               origin="firmware boot")
    return boot


@dataclass
class UbiSlot:
    """What one slot is on NAND: the FIT (kernel volume) and the root (root volume)."""

    fit: Path
    root: Path
    key_dtb: Optional[bytes]


def write_ubi_slot(tree: RootfsTree, modules: Optional[RootfsTree], fit: FitInputs,
                   fw: FirmwareSettings, epoch: int, description: str, squashfs: SquashfsOptions,
                   work: Path) -> UbiSlot:
    """The slot's FIT and squashfs root into `work`, checked against their volumes."""
    fit_file, root_file = work / "slot.fit", work / "slot.squashfs"
    with open(fit_file, "wb") as fh:
        key_dtb = write_fit(nand_initramfs(tree, modules, epoch), None, fh, fit, epoch,
                            description)
    with open(root_file, "wb") as fh:
        write_squashfs(merged(tree, modules), fh, epoch, squashfs)
    size = root_file.stat().st_size
    if size > fw.slot_size:
        raise UserError(f"{fw.slot_line}: the root needs {size / MIB:.1f} MiB and a slot is "
                        f"{fw.slot_size / MIB:.0f} MiB", hint="raise [firmware] slot_size "
                        "(it is fixed for the device's life: choose with room for updates)")
    fit_size = fit_file.stat().st_size
    if fw.kernel_size and fit_size > fw.kernel_size:
        raise UserError(f"{fw.kernel_line}: the FIT is {fit_size / MIB:.1f} MiB and a kernel "
                        f"volume {fw.kernel_size / MIB:.0f} MiB", hint="raise [firmware] "
                        "kernel_size")
    return UbiSlot(fit_file, root_file, key_dtb)


def kernel_volume_size(fw: FirmwareSettings, fit_bytes: int) -> int:
    if fw.kernel_size:
        return fw.kernel_size
    return -(-(fit_bytes * 3 // 2) // MIB) * MIB


def _whole_lebs(size: int, geometry: FlashGeometry) -> int:
    return -(-size // geometry.leb_size)


def layout(fw: FirmwareSettings, slot: UbiSlot, env: Path, geometry: FlashGeometry
           ) -> List[Volume]:
    """The volumes, sized in whole LEBs, checked against the board's flash."""
    leb = geometry.leb_size
    kernel = _whole_lebs(kernel_volume_size(fw, slot.fit.stat().st_size), geometry) * leb
    root = _whole_lebs(fw.slot_size, geometry) * leb
    data = _whole_lebs(fw.data_size, geometry) * leb
    volumes = [Volume("ubootenv", leb, env.with_suffix(".1")),
               Volume("ubootenv2", leb, env.with_suffix(".2")),
               Volume("kernel_a", kernel, slot.fit), Volume("kernel_b", kernel),
               Volume("rootfs_a", root, slot.root), Volume("rootfs_b", root),
               Volume("data", data, autoresize=True)]
    if geometry.size is not None:
        pebs = geometry.size // geometry.erase_block
        needed = (sum(v.size // leb for v in volumes) + UBI_RESERVED_PEBS
                  + -(-pebs * BAD_BLOCK_PER_1024 // 1024))
        if needed > pebs:
            raise UserError(f"{fw.slot_line}: the UBI volumes need {needed} erase blocks "
                            f"(2 x kernel, 2 x slot_size, data_size, the environment and "
                            f"UBI's own) and the board's flash has {pebs}",
                            hint="lower [firmware] slot_size, data_size or kernel_size")
    return volumes


def write_firmware_ubi(slot: UbiSlot, fw: FirmwareSettings, geometry: FlashGeometry,
                       own_fdt: bool, identity: str, epoch: int, out) -> None:
    """The UBI image into the open file `out`: slot A holds `slot`, B and data are empty."""
    fit_addr = fw.fit_addr or f"0x{fw.kernel_load - DATA_POSITION:x}"
    image_seq = int.from_bytes(derived_number(identity, epoch, "ubi-image-seq", 4), "little")
    with tempfile.TemporaryDirectory(prefix="lxembed-firmware-ubi-") as tmp:
        work = Path(tmp)
        env = work / "env"
        both = env_image(factory_env(fw, fit_addr, own_fdt), work)
        env.with_suffix(".1").write_bytes(both[:ENV_SIZE])
        env.with_suffix(".2").write_bytes(both[ENV_SIZE:])
        config, ubi = work / "ubinize.cfg", work / "firmware.ubi"
        config.write_text(ubinize_config(layout(fw, slot, env, geometry)))
        run_tool([shutil.which("ubinize") or "ubinize", "-o", str(ubi),
                  "-p", str(geometry.erase_block), "-m", str(geometry.page_size),
                  "-s", str(geometry.sub_page), "-Q", str(image_seq), str(config)],
                 "firmware")
        with open(ubi, "rb") as fh:
            shutil.copyfileobj(fh, out, MIB)
