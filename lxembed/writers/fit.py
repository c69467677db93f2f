"""`fit`: a U-Boot FIT image (kernel, device tree, initramfs), made with u-boot-tools' mkimage.

Each image carries a sha256 hash; with a key (the recipe's `[fit] key`), the configuration is
signed (sha256 + RSA over the hashes of the kernel, ramdisk and fdt) and the public key is
written, as a U-Boot `/signature` node with `required = "conf"`, into FIT.key.dtb beside it:
what a board's U-Boot control dtb needs to refuse any other FIT. The initramfs is the rootfs
cpio followed by the kernel-modules segment, the two archives today's -kernel boots hand the
kernel. mkimage stamps `timestamp` properties from SOURCE_DATE_EPOCH and RSA PKCS#1 v1.5
signatures are deterministic, so two builds are byte-identical. The data lies outside the
tree at fixed offsets (external data), the kernel's at DATA_POSITION: see there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import UserError
from ..tree import RootfsTree
from .cpio import write_cpio

EMPTY_DTS = "/dts-v1/;\n/ {\n};\n"
# The images' data goes after the tree, the kernel's first, at this offset (mkimage -E -p):
# a boot script that loads the FIT at (kernel load address - DATA_POSITION) finds the kernel
# already where it runs, and U-Boot boots it in place instead of copying it: the guest holds
# one 33 MB arm64 Image rather than two (the copy itself is quick, ~0.03 s under TCG,
# measured). The tree (descriptions, hashes, signature) fits well below that offset.
DATA_POSITION = 0x10000


@dataclass
class FitInputs:
    """What the FIT holds besides the tree; the pipeline gathers it (a writer never downloads)."""

    kernel: bytes
    arch: str  # mkimage's arch name (Arch.uboot)
    load: int  # the kernel's load and entry address
    release: str = ""  # the kernel's `uname -r`, for the description
    fdt: Optional[bytes] = None  # the board's device tree, where it has one
    key: Optional[Path] = None  # key directory: NAME.key and NAME.crt, NAME its basename
    key_line: str = ""  # the recipe line naming the key, for errors


def tool(name: str, package: str = "u-boot-tools") -> str:
    path = shutil.which(name)
    if path is None:
        raise UserError(f"fit: {name} is not installed", hint=f"apt-get install {package}")
    return path


def key_bits(key: Path, where: str) -> int:
    """The RSA size of KEYDIR/NAME.key, for the signature's algo; checks the pair exists."""
    name = key.name
    for f in (key / f"{name}.key", key / f"{name}.crt"):
        if not f.is_file():
            raise UserError(f"{where}: [fit] key {key}: no {f.name} in it",
                            hint=f"openssl req -batch -new -x509 -newkey rsa:2048 -nodes "
                                 f"-keyout {name}.key -out {name}.crt -subj /CN={name}")
    out = subprocess.run([tool("openssl", "openssl"), "rsa", "-in", str(key / f"{name}.key"),
                          "-noout", "-text"], capture_output=True, text=True)
    m = re.search(r"Private-Key: \((\d+) bit", out.stdout)
    if out.returncode != 0 or not m:
        raise UserError(f"{where}: [fit] key {key}/{name}.key is not an RSA private key")
    return int(m.group(1))


def its(inputs: FitInputs, description: str, bits: int = 0) -> str:
    """The image tree source: files are /incbin/'d from mkimage's working directory."""
    def image(name: str, desc: str, kind: str, extra: str = "") -> str:
        return (f"\t\t{name} {{\n\t\t\tdescription = \"{desc}\";\n"
                f"\t\t\tdata = /incbin/(\"{name}\");\n\t\t\ttype = \"{kind}\";\n"
                f"\t\t\tarch = \"{inputs.arch}\";\n\t\t\tos = \"linux\";\n"
                f"\t\t\tcompression = \"none\";\n{extra}"
                "\t\t\thash-1 {\n\t\t\t\talgo = \"sha256\";\n\t\t\t};\n\t\t};\n")
    load = f"\t\t\tload = <0x{inputs.load:08x}>;\n\t\t\tentry = <0x{inputs.load:08x}>;\n"
    images = image("kernel", f"Linux {inputs.release}".strip(), "kernel", load)
    parts = ["kernel", "ramdisk"]
    if inputs.fdt is not None:
        images += image("fdt", "device tree", "flat_dt")
        parts.append("fdt")
    images += image("ramdisk", "initramfs: rootfs and kernel modules", "ramdisk")
    conf = "".join(f"\t\t\t{p} = \"{p}\";\n" for p in parts)
    if bits:
        # sign-images: the signature covers these images' hashes; U-Boot checks them all.
        signed = ", ".join(f'"{p}"' for p in parts)
        conf += (f"\t\t\tsignature-1 {{\n\t\t\t\talgo = \"sha256,rsa{bits}\";\n"
                 f"\t\t\t\tkey-name-hint = \"{inputs.key.name}\";\n"
                 f"\t\t\t\tsign-images = {signed};\n\t\t\t}};\n")
    return (f"/dts-v1/;\n\n/ {{\n\tdescription = \"{description}\";\n\t#address-cells = <1>;\n\n"
            f"\timages {{\n{images}\t}};\n\n\tconfigurations {{\n\t\tdefault = \"conf-1\";\n"
            f"\t\tconf-1 {{\n\t\t\tdescription = \"{description}\";\n{conf}\t\t}};\n\t}};\n}};\n")


def write_fit(tree: RootfsTree, modules: Optional[RootfsTree], out, inputs: FitInputs,
              epoch: int, description: str) -> Optional[bytes]:
    """The FIT into the open file `out`; with a key, returns its public half: a device tree
    holding only /signature/key-NAME."""
    bits = key_bits(inputs.key, inputs.key_line) if inputs.key is not None else 0
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), LC_ALL="C", TZ="UTC")
    with tempfile.TemporaryDirectory(prefix="lxembed-fit-") as tmp:
        work = Path(tmp)
        (work / "kernel").write_bytes(inputs.kernel)
        if inputs.fdt is not None:
            (work / "fdt").write_bytes(inputs.fdt)
        with open(work / "ramdisk", "wb") as fh:
            write_cpio(tree, fh)
            if modules is not None:  # the kernel unpacks concatenated archives in order
                write_cpio(modules, fh)
        (work / "image.its").write_text(its(inputs, description, bits))
        argv = [tool("mkimage"), "-f", "image.its", "-E", "-p", f"0x{DATA_POSITION:x}"]
        if bits:
            (work / "key.dtb").write_bytes(_empty_dtb(work))
            # -r: the key is `required` for configurations: U-Boot boots no unsigned FIT.
            argv += ["-k", str(inputs.key.absolute()), "-K", "key.dtb", "-r"]
        result = subprocess.run(argv + ["image.itb"], cwd=work, capture_output=True, text=True,
                                env=env)
        if result.returncode != 0:
            why = (result.stderr or result.stdout).strip()[-400:]
            raise UserError(f"fit: mkimage failed: {why}")
        with open(work / "image.itb", "rb") as fh:
            shutil.copyfileobj(fh, out, 1 << 20)
        return (work / "key.dtb").read_bytes() if bits else None


def _empty_dtb(work: Path) -> bytes:
    (work / "empty.dts").write_text(EMPTY_DTS)
    result = subprocess.run([tool("dtc", "device-tree-compiler"), "-I", "dts", "-O", "dtb",
                             "-o", "empty.dtb", "empty.dts"], cwd=work, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise UserError(f"fit: dtc failed: {result.stderr.strip()[-300:]}")
    return (work / "empty.dtb").read_bytes()


def write_script_image(text: str, arch: str, work: Path) -> bytes:
    """A U-Boot script image (boot.scr) of `text`, made in `work`; fixed time: reproducible."""
    src, scr = work / "boot.cmd", work / "boot.scr"
    src.write_text(text)
    result = subprocess.run([tool("mkimage"), "-A", arch, "-O", "linux", "-T", "script",
                             "-C", "none", "-d", str(src), str(scr)], capture_output=True,
                            text=True, env=dict(os.environ, SOURCE_DATE_EPOCH="0"))
    if result.returncode != 0:
        raise UserError(f"mkimage (boot.scr) failed: {result.stderr.strip()[-300:]}")
    return scr.read_bytes()
