"""What boots an A/B firmware image: U-Boot's boot.scr, the boot-state environment and the
initramfs /init that mounts a slot under the data partition's overlay.

The boot state is a U-Boot environment in libubootenv's redundant layout (two copies of ENV_SIZE
bytes, each CRC32 + a flags byte + `name=value\\0...`, the copy with the higher flags counter the
current one): the layout SWUpdate and fw_setenv on the device read and write through
/etc/fw_env.config, and which survives a power cut in the middle of a write (the other copy stays
whole). qemu's U-Boot builds keep their own environment in flash they cannot write (FACTS), so
boot.scr reads and writes this one itself: `virtio read` both copies, `env import -c` the older
then the newer (a copy whose CRC fails is not imported), count the attempt, `env export -c` into
the older copy with the flags counter one higher. The variables are RAUC's U-Boot ones:
BOOT_ORDER ("A B": try A first), BOOT_A_LEFT and BOOT_B_LEFT (attempts left), plus
lxembed_trial (the slot booted on trial since an update, or "none") and lxembed_rollback (the
slot whose trial failed, or "none"; written by the device).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

ENV_SIZE = 0x4000  # one copy; the second follows it in the env partition
SLOTS = ("A", "B")
STATE_VARS = ("BOOT_ORDER", "BOOT_A_LEFT", "BOOT_B_LEFT", "lxembed_trial", "lxembed_rollback")
FIT_PATH = "/boot/fit.itb"  # in each slot's root filesystem


@dataclass
class BootLayout:
    """Where things are, in U-Boot's terms and in Linux's."""

    interface: str  # U-Boot's block interface: "virtio"
    device: int  # its device number
    env_sector: int  # the env partition's first sector (512-byte)
    slot_partitions: Dict[str, int]  # slot -> partition number
    tries: int
    scratch: int  # free RAM for the env buffers (4 x 64 KiB)
    fit_addr: str  # where the FIT is loaded (its kernel lands at its load address)
    cmdline: str  # the kernel command line, without root= and lxembed.slot=
    root_prefix: str  # Linux's name of the disk's partitions, "/dev/vda" -> /dev/vda3
    own_fdt: bool  # the FIT has the board's device tree; else the kernel gets U-Boot's (qemu's)


def initial_env(tries: int) -> str:
    """The factory state: slot A (holding the image) good, slot B empty."""
    return (f"BOOT_ORDER=A B\nBOOT_A_LEFT={tries}\nBOOT_B_LEFT=0\nlxembed_trial=none\n"
            "lxembed_rollback=none\n")


def boot_script(layout: BootLayout) -> str:
    """boot.scr's source (hush): pick a slot, count the attempt, boot its FIT."""
    raw1, raw2 = layout.scratch, layout.scratch + 0x10000
    imp, out = layout.scratch + 0x20000, layout.scratch + 0x30000
    count = ENV_SIZE // 512
    dev = f"{layout.interface} {layout.device}"
    copy = {1: (raw1, layout.env_sector), 2: (raw2, layout.env_sector + count)}

    def import_copy(n: int) -> str:
        raw, _ = copy[n]
        # CRC then the data, without the flags byte between them: what `env import -c` reads.
        return (f"cp.b 0x{raw:x} 0x{imp:x} 4; cp.b 0x{raw + 5:x} 0x{imp + 4:x} "
                f"0x{ENV_SIZE - 5:x}; env import -c 0x{imp:x} 0x{ENV_SIZE - 1:x} "
                f"{' '.join(STATE_VARS)}"
                f" || echo \"lxembed-boot: state copy {n} is damaged\"\n")

    def write_older(older: int, newer: int) -> str:
        raw, sector = copy[older]
        return (f"setexpr.b flags *0x{copy[newer][0] + 4:x} + 1\n"
                f"env export -c -s 0x{ENV_SIZE - 1:x} 0x{out:x} {' '.join(STATE_VARS)}\n"
                f"cp.b 0x{out:x} 0x{raw:x} 4; mw.b 0x{raw + 4:x} ${{flags}}; "
                f"cp.b 0x{out + 4:x} 0x{raw + 5:x} 0x{ENV_SIZE - 5:x}\n"
                f"{layout.interface} write 0x{raw:x} 0x{sector:x} 0x{count:x}\n")

    lines: List[str] = [
        "# lxembed A/B boot (generated): state in the env partition, RAUC's variables",
        f"setenv BOOT_ORDER \"A B\"; setenv BOOT_A_LEFT {layout.tries}; "
        f"setenv BOOT_B_LEFT 0; setenv lxembed_trial none; setenv lxembed_rollback none",
        f"{layout.interface} read 0x{raw1:x} 0x{copy[1][1]:x} 0x{count:x}",
        f"{layout.interface} read 0x{raw2:x} 0x{copy[2][1]:x} 0x{count:x}",
        # The newer copy: the higher flags byte, 0 after 255 (libubootenv's rule).
        f"if itest.b *0x{raw1 + 4:x} == 0xff && itest.b *0x{raw2 + 4:x} == 0; then "
        "setenv newer 2",
        f"elif itest.b *0x{raw2 + 4:x} == 0xff && itest.b *0x{raw1 + 4:x} == 0; then "
        "setenv newer 1",
        f"elif itest.b *0x{raw1 + 4:x} -ge *0x{raw2 + 4:x}; then setenv newer 1",
        "else setenv newer 2; fi",
        "if test ${newer} = 1; then",
        import_copy(2) + import_copy(1).rstrip("\n"),
        "else",
        import_copy(1) + import_copy(2).rstrip("\n"),
        "fi",
        "setenv slot",
        "for s in ${BOOT_ORDER}; do",
    ]
    for slot in SLOTS:
        lines.append(f"  if test -z \"${{slot}}\" && test \"${{s}}\" = {slot} && "
                     f"test ${{BOOT_{slot}_LEFT}} -gt 0; then setexpr BOOT_{slot}_LEFT "
                     f"${{BOOT_{slot}_LEFT}} - 1; setenv slot {slot}; fi")
    lines += [
        "done",
        "if test -z \"${slot}\"; then",
        # Every slot used up its attempts: start the count again rather than stop for good.
        f"  echo \"lxembed-boot: no slot has attempts left: {layout.tries} each again\"",
        f"  setenv BOOT_A_LEFT {layout.tries}; setenv BOOT_B_LEFT {layout.tries}",
        "fi",
        # Written to the older copy; the newer stays whole if the power goes now.
        "if test ${newer} = 1; then",
        write_older(2, 1).rstrip("\n"),
        "else",
        write_older(1, 2).rstrip("\n"),
        "fi",
        "if test -z \"${slot}\"; then reset; fi",
    ]
    for slot in SLOTS:
        part = layout.slot_partitions[slot]
        lines.append(f"if test ${{slot}} = {slot}; then setenv part {part}; "
                     f"setenv left ${{BOOT_{slot}_LEFT}}; fi")
    lines += [
        # The slot an update installed boots on trial until its init marks it good.
        "setenv trial; if test \"${lxembed_trial}\" = \"${slot}\"; then setenv trial "
        "\" lxembed.trial\"; fi",
        "echo \"lxembed-boot: slot ${slot} (partition ${part}), ${left} attempts left "
        "after this one\"",
        f"setenv bootargs \"{layout.cmdline} root={layout.root_prefix}${{part}} "
        # ${lxembed_bootargs}: what a user at the U-Boot prompt adds for one boot (e.g.
        # lxembed.factory_reset); never saved, as only STATE_VARS are.
        "lxembed.slot=${slot}${trial} ${lxembed_bootargs}\"",
        f"if load {dev}:${{part}} {layout.fit_addr} {FIT_PATH}; then",
        f"  bootm {layout.fit_addr}#conf-1"
        + ("" if layout.own_fdt else f" {layout.fit_addr}#conf-1 ${{fdtcontroladdr}}"),
        "fi",
        # A slot that holds no bootable FIT: the attempt is counted; the next boot tries on.
        "echo \"lxembed-boot: slot ${slot} did not boot\"",
        "reset",
    ]
    return "\n".join(lines) + "\n"
