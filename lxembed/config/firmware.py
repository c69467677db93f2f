"""The firmware format's settings: the recipe's [firmware] with the board's [uboot] facts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from ..errors import UserError
from .loader import Plan
from .toml_lines import key_line
from .uboot import uboot_settings

MIB = 1 << 20
BOOT_SIZE = 8 * MIB
ENV_PART_SIZE = 1 * MIB
PARTITIONS = ("boot", "env", "a", "b", "data")
FIRMWARE_COMMAND = "/sbin/lxembed-firmware"  # the device's own command (rootfs/firmware.py)
# A device reboots on a kernel panic (a failed attempt U-Boot has counted) instead of hanging.
CMDLINE = "panic=3 quiet cryptomgr.notests"


@dataclass
class FirmwareSettings:
    """The recipe's [firmware] and the board's facts, as the writers need them."""

    version: str
    slot_size: int
    data_size: int
    tries: int
    trial_timeout: float
    root_prefix: str  # Linux's name of the boot disk, partitions appended: /dev/vda -> /dev/vda3
    interface: str  # U-Boot's: virtio
    scratch: int
    fit_addr: str  # where boot.scr loads the FIT; "": just below the kernel's load address
    kernel_load: int
    cmdline: str
    key: object = None  # the bundle's key directory (Path)
    slot_line: str = ""  # the recipe lines, for errors
    data_line: str = ""
    # NAND boards ([flash] type = "nand"): the layout is UBI volumes (writers/firmware_ubi.py).
    nand: bool = False
    kernel_size: int = 0  # each kernel volume; 0: from the FIT's size
    kernel_line: str = ""
    ubi_mtd: str = "ubi"

    def offsets(self) -> Dict[str, int]:
        """Each partition's first byte (and "end")."""
        sizes = {"boot": BOOT_SIZE, "env": ENV_PART_SIZE, "a": self.slot_size,
                 "b": self.slot_size, "data": self.data_size}
        at, offsets = MIB, {}
        for name in PARTITIONS:
            offsets[name] = at
            at += sizes[name]
        offsets["end"] = at
        return offsets

    def partition(self, name: str) -> str:
        return f"{self.root_prefix}{PARTITIONS.index(name) + 1}"


def firmware_settings(plan: Plan) -> FirmwareSettings:
    """From the recipe and board; every bad value is one line naming its recipe line."""
    table = plan.recipe.settings.get("firmware")
    if table is None:
        raise UserError(f"{plan.recipe.path}: no [firmware] table: the firmware format needs "
                        "its slots, data partition and update key",
                        hint="docs/firmware.md; examples/firmware/firmware.toml is an example")
    uboot = uboot_settings(plan.board, "the firmware format")
    console = (plan.board.qemu or {}).get("console") or plan.arch.console
    line = plan.recipe.line_of
    if not 1 <= table["tries"] <= 9:
        raise UserError(f"{line('tries', 'firmware')}: [firmware] tries = {table['tries']}: "
                        "the boot attempts a slot gets must be 1 to 9")
    if not table.get("key"):
        raise UserError(f"{line('firmware')}: [firmware] has no key: a device takes only signed "
                        "updates", hint="key = \"keys/NAME\" (NAME.key and NAME.crt in it)")
    key = plan.recipe.path.parent / table["key"]
    if not key.is_dir():
        raise UserError(f"{line('key', 'firmware')}: [firmware] key {table['key']}: no such "
                        f"directory ({key.resolve()})")
    if uboot["verify"] and not (plan.recipe.settings.get("fit") or {}).get("key"):
        # Signed bundles into slots whose FIT U-Boot would boot unchecked: refused.
        raise UserError(f"{line('firmware')}: [firmware] needs [fit] key too: without it U-Boot "
                        "boots any FIT written into a slot",
                        hint="[fit]\nkey = \"keys/NAME\" (may be the [firmware] key)")
    for name in ("slot_size", "data_size"):
        if table[name] % MIB:
            raise UserError(f"{line(name, 'firmware')}: [firmware] {name} = {table[name]} "
                            "bytes: partitions are whole MiB")
    if table["data_size"] < 8 * MIB:
        raise UserError(f"{line('data_size', 'firmware')}: [firmware] data_size = "
                        f"{table['data_size'] / MIB:g} MiB: the data partition needs at "
                        "least 8 MiB")
    fw = FirmwareSettings(
        nand=is_nand(plan.board), kernel_size=table.get("kernel_size") or 0,
        kernel_line=line("kernel_size", "firmware") if table.get("kernel_size")
        else line("firmware"),
        ubi_mtd=((plan.board.settings.get("flash") or {}).get("ubi_mtd") or "ubi"),
        version=str(table["version"]), slot_size=table["slot_size"],
        data_size=table["data_size"], tries=table["tries"],
        trial_timeout=float(table["trial_timeout"]), root_prefix=uboot["linux_disk"],
        interface=uboot["interface"], scratch=int(uboot["scratch_addr"], 0),
        fit_addr=uboot["fit_addr"] or "", kernel_load=int(uboot["kernel_load"], 0),
        cmdline=f"console={console} {CMDLINE}", key=key,
        slot_line=line("slot_size", "firmware"), data_line=line("data_size", "firmware"))
    need = fw.offsets()["end"] + MIB  # the backup GPT after the last partition
    if not fw.nand and uboot["disk_size"] and need > uboot["disk_size"]:
        board = f"{plan.board.path}:{key_line(plan.board.path.read_text(), 'uboot', 'disk_size')}"
        raise UserError(f"{fw.data_line}: the firmware layout needs {need / MIB:g} MiB and the "
                        f"board's disk is {uboot['disk_size'] / MIB:g} MiB ({board})",
                        hint="lower [firmware] slot_size or data_size")
    return fw


def is_nand(board) -> bool:
    """A board whose storage is raw NAND: its firmware is UBI volumes, not a disk."""
    return ((board.settings.get("flash") or {}).get("type")) == "nand"
