"""`swu`: a signed SWUpdate bundle that writes one root slot image into the inactive A/B slot.

What Debian's swupdate 2022.12 reads (its binary and source, see docs/firmware.md): a cpio
archive in the "crc" variant (070702: swupdate checks each file's byte sum) whose first file is
`sw-description` (libconfig) and second `sw-description.sig`, a DER CMS signature of it
(Debian builds swupdate with CMS verification; `-k` names the certificate that must have
signed it). The description pins the image's sha256, so the signature covers the image too.
The image is zstd-compressed in the bundle (swupdate's `compressed = "zstd"`) and streamed
to the slot (`installed-directly`): the device needs no temporary space for it.

The description has one selection per target slot, `stable,A` and `stable,B`, nested under the
board's name: the device runs `swupdate -e stable,B` when it runs from A. Each selection
writes the slot's device and then (only after the image is written and verified) the U-Boot
environment variables of that slot's boot counting (`bootenv`), so power lost mid-install
leaves the old boot order. `hardware-compatibility` makes swupdate refuse the bundle on a
device whose /etc/hwrevision names another board (the lookup of the board's node fails).

Byte-identical build to build: fixed cpio metadata, zstd at a fixed level without threads,
and a CMS signature without signed attributes (`-noattr`: no signing time); RSA PKCS#1 v1.5
signatures are deterministic.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Dict, List, Optional, Tuple

import zstandard

from ..compression import compressed_memo
from ..errors import UserError

SOFTWARE_SET = "stable"  # the `-e SET,MODE` set; the mode is the target slot's name
IMAGE_NAME = "rootfs.ext4.zst"
UBI_IMAGES = ("kernel.fit.zst", "rootfs.squashfs.zst")  # NAND: the FIT, then the root
# zstd for the image: level 9 with long-distance matching over a 16 MiB window. Measured on an
# 82 MiB arm64 root holding swupdate's closure: 23.6 MB in 1.9 s, against 20.4 MB in 44 s at
# level 19 and 25.6 MB in 0.7 s at level 3 (each build of a changed root pays it once). The
# device needs the window (16 MiB) as memory to decompress; swupdate accepts up to 128 MiB.
ZSTD_LEVEL = 9
ZSTD_WINDOW_LOG = 24
HW_REVISION = "1.0"  # /etc/hwrevision's revision field; the board name is what matters
_CPIO_CRC = b"070702"
# A libconfig setting name: what a board name must be to name a node of sw-description.
_LIBCONFIG_NAME = re.compile(r"[A-Za-z*][-A-Za-z0-9_*]*\Z")


def boot_env(slot: str, other: str, tries: int) -> Dict[str, str]:
    """The boot-counting variables that make U-Boot try `slot` first, `tries` times
    (RAUC's U-Boot scheme, which the boot script reads), marked as on trial until the
    device marks it good."""
    return {"BOOT_ORDER": f"{slot} {other}", f"BOOT_{slot}_LEFT": str(tries),
            "lxembed_trial": slot}


@dataclass
class SwuInputs:
    """One bundle: the new root image and where each choice of slot writes it."""

    image: Path  # the slot image (ext4, raw)
    version: str  # the firmware version, sw-description's `version`
    board: str  # the board name: the sw-description node this bundle installs under
    slots: Dict[str, str]  # slot name -> its device on the target, e.g. {"A": "/dev/vda3"}
    key: Path  # PEM RSA private key that signs sw-description
    cert: Path  # its X.509 certificate (what the device holds and passes as `-k`)
    tries: int = 3  # boot attempts U-Boot gives a newly installed slot
    env: Dict[str, Dict[str, str]] = field(default_factory=dict)  # slot -> variables;
    # empty: boot_env(slot, other slot, tries)
    epoch: int = 0  # cpio mtime of the bundle's files
    slot_bytes: int = 0  # the slots' size on the device; 0: not checked
    where: str = "swu"  # what names these settings in errors (a recipe line)
    # NAND (UBI volumes, swupdate's `ubivol` handler): `slots` maps a slot to its root volume
    # ("rootfs_b") and `kernel_volumes` to its kernel volume, which gets `kernel` (the FIT).
    kernel: Optional[Path] = None
    kernel_volumes: Dict[str, str] = field(default_factory=dict)

    def env_for(self, slot: str) -> Dict[str, str]:
        if slot in self.env:
            return self.env[slot]
        other = " ".join(s for s in self.slots if s != slot)
        return boot_env(slot, other, self.tries)


def selection(slot: str) -> str:
    """The `-e` argument that installs into `slot`."""
    return f"{SOFTWARE_SET},{slot}"


def hwrevision(board: str) -> str:
    """/etc/hwrevision for the device: `BOARD REVISION`, what swupdate matches against."""
    return f"{board} {HW_REVISION}\n"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ubivol(name: str, volume: str, sha256: str, raw_bytes: int) -> str:
    """An image for swupdate's ubivol handler: a compressed one must say its size unpacked
    (UBI's volume update takes the byte count first)."""
    return (f"{{\n\t\t\t\t\tfilename = {_quote(name)};\n"
            f"\t\t\t\t\tvolume = {_quote(volume)};\n"
            f"\t\t\t\t\ttype = \"ubivol\";\n"
            f"\t\t\t\t\tcompressed = \"zstd\";\n"
            f"\t\t\t\t\tinstalled-directly = true;\n"
            f"\t\t\t\t\tsha256 = \"{sha256}\";\n"
            f"\t\t\t\t\tproperties: {{ decompressed-size = \"{raw_bytes}\"; }};\n"
            f"\t\t\t\t}}")


def sw_description(inputs: SwuInputs, sha256: str,
                   ubi: Optional[List[Tuple[str, int]]] = None) -> str:
    """The libconfig text: one selection per slot, under the board's node. `ubi`: the NAND
    images' (sha256, raw size), the FIT's then the root's; `sha256` is then unused."""
    modes = []
    for slot, device in inputs.slots.items():
        env = "".join(f"\t\t\t\t\t{{ name = {_quote(k)}; value = {_quote(v)}; }},\n"
                      for k, v in inputs.env_for(slot).items()).rstrip(",\n") + "\n"
        if ubi is not None:  # the FIT first: a root without its kernel never boots
            volumes = (inputs.kernel_volumes[slot], device)
            images = ", ".join(_ubivol(name, vol, digest, raw) for name, vol, (digest, raw)
                               in zip(UBI_IMAGES, volumes, ubi))
            modes.append(f"\t\t\t{slot}: {{\n\t\t\t\timages: ( {images} );\n"
                         f"\t\t\t\tbootenv: (\n{env}\t\t\t\t);\n\t\t\t}};\n")
            continue
        modes.append(
            f"\t\t\t{slot}: {{\n"
            f"\t\t\t\timages: ( {{\n"
            f"\t\t\t\t\tfilename = {_quote(IMAGE_NAME)};\n"
            f"\t\t\t\t\tdevice = {_quote(device)};\n"
            f"\t\t\t\t\ttype = \"raw\";\n"
            f"\t\t\t\t\tcompressed = \"zstd\";\n"
            f"\t\t\t\t\tinstalled-directly = true;\n"
            f"\t\t\t\t\tsha256 = \"{sha256}\";\n"
            f"\t\t\t\t}} );\n"
            f"\t\t\t\tbootenv: (\n{env}\t\t\t\t);\n"
            f"\t\t\t}};\n")
    return (f"software =\n{{\n\tversion = {_quote(inputs.version)};\n"
            f"\tdescription = {_quote(f'lxembed firmware for {inputs.board}')};\n"
            f"\t{inputs.board}: {{\n"
            f"\t\thardware-compatibility: [ \"{HW_REVISION}\" ];\n"
            f"\t\t{SOFTWARE_SET}: {{\n{''.join(modes)}\t\t}};\n\t}};\n}}\n")


def _check(inputs: SwuInputs) -> None:
    where = inputs.where
    if not inputs.image.is_file():
        raise UserError(f"{where}: slot image {inputs.image}: no such file")
    if not _LIBCONFIG_NAME.match(inputs.board):
        raise UserError(f"{where}: board name {inputs.board!r} cannot name a sw-description "
                        "node (letters, digits, - and _, starting with a letter)")
    if len(inputs.slots) != 2:
        raise UserError(f"{where}: an A/B bundle needs exactly two slots, not "
                        f"{sorted(inputs.slots)}")
    for slot, device in inputs.slots.items():
        if inputs.kernel is not None:  # NAND: UBI volume names
            names = (device, inputs.kernel_volumes.get(slot, ""))
            if not all(_LIBCONFIG_NAME.match(n) for n in names):
                raise UserError(f"{where}: slot {slot!r}: volumes {names!r}: a slot names its "
                                "root and kernel UBI volumes")
            continue
        if not _LIBCONFIG_NAME.match(slot) or not device.startswith("/"):
            raise UserError(f"{where}: slot {slot!r} = {device!r}: a slot is a name and an "
                            "absolute device path")
    size = inputs.image.stat().st_size
    if inputs.slot_bytes and size > inputs.slot_bytes:
        raise UserError(f"{where}: the root image ({size} bytes) does not fit a slot "
                        f"({inputs.slot_bytes} bytes)")
    if inputs.tries < 1:
        raise UserError(f"{where}: tries = {inputs.tries}: a new slot needs at least one boot")
    for f in (inputs.key, inputs.cert):
        if not f.is_file():
            raise UserError(f"{where}: signing key {f}: no such file",
                            hint="openssl req -batch -new -x509 -newkey rsa:2048 -nodes "
                                 "-keyout swu.key -out swu.crt -subj /CN=swu -days 3650")


def sign(description: bytes, key: Path, cert: Path, where: str = "swu") -> bytes:
    """The DER CMS signature swupdate verifies (`openssl cms -verify -binary`), without
    signed attributes so that it is the same every time."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise UserError("swu: openssl is not installed", hint="apt-get install openssl")
    with tempfile.TemporaryDirectory(prefix="lxembed-swu-") as tmp:
        desc = Path(tmp) / "sw-description"
        desc.write_bytes(description)
        run = subprocess.run([openssl, "cms", "-sign", "-binary", "-noattr", "-nosmimecap",
                              "-in", str(desc), "-signer", str(cert), "-inkey", str(key),
                              "-outform", "DER"], capture_output=True)
    if run.returncode != 0 or not run.stdout:
        reason = run.stderr.decode(errors="replace").strip().splitlines()
        raise UserError(f"{where}: cannot sign with {key} and {cert}: "
                        f"{reason[-1] if reason else 'openssl cms failed'}",
                        hint="the key must be the PEM RSA private key of that certificate")
    return run.stdout


def compress(raw: bytes) -> bytes:
    """zstd, one thread (the same bytes every time), remembered by the input's hash."""
    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL, window_log=ZSTD_WINDOW_LOG, enable_ldm=True, write_checksum=True,
        threads=0)
    return compressed_memo(
        raw, f"zstd{ZSTD_LEVEL}w{ZSTD_WINDOW_LOG}", "zst",
        lambda data: zstandard.ZstdCompressor(compression_params=params).compress(data))


def _cpio_entry(out: BinaryIO, ino: int, name: str, data: bytes, mtime: int) -> None:
    """One file in cpio's "crc" variant: newc plus the byte sum swupdate checks."""
    encoded = name.encode() + b"\0"
    check = sum(data) & 0xFFFFFFFF
    fields = (ino, 0o100644, 0, 0, 1, mtime, len(data), 0, 0, 0, 0, len(encoded), check)
    header = _CPIO_CRC + b"".join(b"%08X" % f for f in fields) + encoded
    out.write(header + b"\0" * (-len(header) % 4))
    out.write(data)
    out.write(b"\0" * (-len(data) % 4))


def write_cpio_crc(files: Tuple[Tuple[str, bytes], ...], out: BinaryIO, mtime: int) -> None:
    """The files in this order (swupdate reads sw-description first), then the trailer."""
    for ino, (name, data) in enumerate(files, 1):
        _cpio_entry(out, ino, name, data, mtime)
    _cpio_entry(out, 0, "TRAILER!!!", b"", 0)
    out.write(b"\0" * (-out.tell() % 512))


def read_bundle(path: Path) -> Tuple[str, List[Tuple[str, int]]]:
    """sw-description's text and the (name, size) of each file of a .swu, for inspection."""
    files: List[Tuple[str, int]] = []
    description = ""
    with open(path, "rb") as fh:
        while True:
            header = fh.read(110)
            if len(header) < 110 or header[:6] not in (b"070701", _CPIO_CRC):
                raise UserError(f"{path}: not an SWUpdate bundle (a newc/crc cpio archive)")
            size, namesize = int(header[54:62], 16), int(header[94:102], 16)
            name = fh.read(namesize)[:-1].decode(errors="replace")
            fh.seek(-(110 + namesize) % 4, 1)
            if name == "TRAILER!!!":
                break
            if name == "sw-description":
                description = fh.read(size).decode(errors="replace")
                fh.seek(-size % 4, 1)
            else:
                fh.seek(size + (-size % 4), 1)
            files.append((name, size))
    if not files or files[0][0] != "sw-description":
        raise UserError(f"{path}: not an SWUpdate bundle (sw-description is not its first file)")
    return description, files


@dataclass
class SwuBundle:
    path: Path
    bytes: int
    image_bytes: int  # the slot image, raw
    compressed_bytes: int  # the image as it is in the bundle
    sha256: str  # of the compressed image, as pinned in sw-description
    description: str


def write_swu(inputs: SwuInputs, path: Path) -> SwuBundle:
    """The signed bundle at `path`, written whole or not at all."""
    _check(inputs)
    packed = compress(inputs.image.read_bytes())
    image_bytes = inputs.image.stat().st_size
    digest = hashlib.sha256(packed).hexdigest()
    files: Tuple[Tuple[str, bytes], ...] = ((IMAGE_NAME, packed),)
    ubi = None
    if inputs.kernel is not None:
        kernel = inputs.kernel.read_bytes()
        kernel_packed = compress(kernel)
        ubi = [(hashlib.sha256(kernel_packed).hexdigest(), len(kernel)), (digest, image_bytes)]
        files = ((UBI_IMAGES[0], kernel_packed), (UBI_IMAGES[1], packed))
    description = sw_description(inputs, digest, ubi)
    signature = sign(description.encode(), inputs.key, inputs.cert, inputs.where)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            write_cpio_crc((("sw-description", description.encode()),
                            ("sw-description.sig", signature)) + files, out, inputs.epoch)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return SwuBundle(path, path.stat().st_size, image_bytes, len(packed), digest, description)
