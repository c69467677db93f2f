"""What a device needs to install lxembed's SWUpdate bundles, and how swupdate is run on it.

Debian's swupdate 2022.12 (read from its binary and source, see docs/firmware.md):
- reaches the U-Boot environment only through libubootenv, which it dlopen()s as
  `libubootenv.so.0` (so no ELF closure finds it: it is picked by name), and only when started
  with `-B uboot` (its default bootloader interface is `none`, an environment in RAM);
- reads the environment's location from /etc/fw_env.config (compiled in; two lines: the
  redundant copies) and, should both copies be unreadable, /etc/u-boot-initial-env;
- verifies CMS signatures against the certificate given with `-k` and the board against
  /etc/hwrevision (`BOARD REVISION`);
- extracts sw-description to $TMPDIR (default /tmp) and streams `installed-directly` images
  to their device: a few KiB of /tmp, not the image's size.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from ..arch import Arch
from ..writers.swu import hwrevision, selection

# The packages `pick` takes the device's files from (the ELF closure brings the rest).
PACKAGES = ("swupdate", "libubootenv0.1", "libubootenv-tool")
CERT_PATH = "/etc/swupdate/public.pem"  # the certificate bundles must be signed with
FW_ENV_CONFIG = "/etc/fw_env.config"  # fixed in swupdate's build (CONFIG_UBOOT_FWENV)
HWREVISION = "/etc/hwrevision"
ENV_COPY_SIZE = 0x4000  # each of the two copies of the environment (mkenvimage -r -s)


def picks(arch: Arch) -> List[str]:
    """The recipe `pick` list: swupdate, fw_printenv/fw_setenv (the device marks its slot
    good with fw_setenv) and the library swupdate dlopen()s."""
    return ["/usr/bin/swupdate", "/usr/bin/fw_printenv", "/usr/bin/fw_setenv",
            f"/usr/lib/{arch.triplet}/libubootenv.so.0"]


def fw_env_config(env_device: str, offsets: Tuple[int, int] = (0, ENV_COPY_SIZE),
                  size: int = ENV_COPY_SIZE) -> str:
    """/etc/fw_env.config: one line per redundant copy (device, offset, size)."""
    return "".join(f"{env_device} 0x{off:x} 0x{size:x}\n" for off in offsets)


def fw_env_config_volumes(volumes: List[str], size: int = ENV_COPY_SIZE) -> str:
    """/etc/fw_env.config on NAND: each copy a UBI volume of its own, from its start
    (libubootenv writes a volume whole, with UBI's volume update)."""
    return "".join(f"{volume} 0x0 0x{size:x}\n" for volume in volumes)


def device_files(board: str, cert_pem: bytes, env_device: str,
                 env_volumes: Optional[List[str]] = None) -> Dict[str, bytes]:
    """The configuration swupdate and fw_setenv read on the device (path -> content, all
    root-owned 0644): the bundles' certificate, the environment's copies (in `env_device`,
    or on NAND one per UBI volume of `env_volumes`), the board."""
    env = fw_env_config_volumes(env_volumes) if env_volumes else fw_env_config(env_device)
    return {
        CERT_PATH: cert_pem,
        FW_ENV_CONFIG: env.encode(),
        HWREVISION: hwrevision(board).encode(),
    }


def install_command(bundle: str, slot: str, cert: str = CERT_PATH, check_only: bool = False,
                    running_version: str = "") -> List[str]:
    """The swupdate command line that installs `bundle` into `slot` (the inactive one).
    -B uboot: write the boot variables through libubootenv (Debian's default is `none`);
    -m: no `ustate` variable (the boot script and the init keep their own state);
    -N: refuse a bundle older than the running firmware (the same version is allowed)."""
    argv = ["swupdate", "-B", "uboot", "-m", "-v", "-i", bundle, "-k", cert,
            "-e", selection(slot)]
    if running_version:
        argv += ["-N", running_version]
    if check_only:
        argv.append("-c")
    return argv


# swupdate prints each error as `[ERROR] : SWUPDATE failed [N] ERROR : reason` (stderr);
# the first reason is the cause, the later ones its consequences. A bundle without a signature
# is only said in a trace line (-v): the file after sw-description is not the .sig.
_ERROR = re.compile(r"\[ERROR\][^\n]*?ERROR : ([^\n]+)")
_UNSIGNED = re.compile(r"not the first of the list: \S+ instead of sw-description\.sig")
_PLAIN_ERROR = re.compile(r"^Error: (.+)$", re.M)
# Known causes, said the way a user reads them.
_MEANINGS = (
    ("Authentication of all signatures failed", "not signed by this device's key"),
    ("Signature verification failed", "sw-description does not match its signature"),
    ("Checksum WRONG", "damaged (a file's cpio checksum does not match)"),
    ("HASH mismatch", "an image does not match its sha256 in sw-description"),
    ("ZSTD_decompressStream failed", "damaged (an image does not decompress)"),
    ("HW compatibility not found", "made for another board"),
    ("No downgrading allowed", "older than the running firmware"),
)


def refusal(output: str) -> str:
    """One line saying why swupdate (run with -v) refused a bundle, from its output."""
    if _UNSIGNED.search(output):
        return "not signed (no sw-description.sig after sw-description)"
    causes = [c.strip() for c in _ERROR.findall(output) if not c.startswith("SWUpdate *failed*")]
    plain = _PLAIN_ERROR.findall(output)
    reason = causes[0] if causes else plain[0].strip() if plain else "swupdate failed"
    meaning = next((m for key, m in _MEANINGS if key in reason), "")
    return f"{meaning}: {reason}" if meaning else reason
