"""Debian kernels for qemu boards: the image and /lib/modules/KVER, fetched once and pinned.

The board's kernel meta-package (linux-image-arm64, ...) is resolved through the same private
apt state as every other package; only the versioned image package it points to is downloaded
(its dependency closure -- initramfs-tools, udev, kmod -- is for installed systems, not for us).
The image and the modules tree are unpacked once per (package, version) under
cache_dir()/kernels/, with a kernel.json that pins what was used.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ..config import Board
from ..errors import UserError
from ..log import step
from ..paths import cache_dir, file_lock
from .apt import Deb, PackageSource
from .kernel_unpack import (  # noqa: F401  (Kernel and unpacked_pin: this module's API too)
    Kernel,
    _unpack,
    _unpack_dtbs,
    kernel_arch,
    unpacked_pin,
)
from .vendor_kernel import vendor_kernel


def kernel_meta_package(board: Board) -> str:
    qemu = board.qemu or {}
    return qemu.get("kernel_package") or board.arch.kernel_package


def debian_kernel_deb(board: Board, mirror: Optional[str] = None) -> Path:
    """The .deb of the board's Debian kernel, downloaded (verified against the index)."""
    source = PackageSource(board.suite, kernel_arch(board), mirror)
    return source.download(_image_package(source, kernel_meta_package(board))).path


def fetch_kernel(board: Board, mirror: Optional[str] = None) -> Kernel:
    """The board's kernel, unpacked in the cache; downloads it the first time only."""
    if board.settings.get("kernel") is not None:  # its own kernel: local files, no download
        return vendor_kernel(board)
    if board.qemu is None:
        raise UserError(
            f"board {board.name} has no [qemu] profile, so no kernel to boot",
            hint="use --user to run the checks under qemu-user instead",
        )
    arch, meta = kernel_arch(board), kernel_meta_package(board)
    source = PackageSource(board.suite, arch, mirror)
    deb = _image_package(source, meta)
    root = cache_dir() / "kernels" / f"{deb.name}_{deb.version.replace(':', '%3a')}_{deb.arch}"
    data = unpacked_pin(root)
    if data is None or not (root / "dtbs").is_dir():
        with file_lock(root.with_name(f".{root.name}.lock")):
            data = unpacked_pin(root)
            if data is None:
                with step(f"kernel {deb.name} {deb.version}"):
                    source.download(deb)  # verified against the index, fetched again if damaged
                    _unpack(deb, root, meta)
                data = unpacked_pin(root)
            elif not (root / "dtbs").is_dir():  # unpacked before device trees were kept
                source.download(deb)
                _unpack_dtbs(deb, root)
    vmlinux = root / data["vmlinux"] if data.get("vmlinux") else None
    return Kernel(
        data["package"],
        data["version"],
        meta,
        data["arch"],
        data["release"],
        root / data["image"],
        vmlinux,
        root / "lib" / "modules" / data["release"],
        root / "dtbs",
    )


def _image_package(source: PackageSource, meta: str) -> Deb:
    """The versioned linux-image-KVER package the meta-package resolves to (apt simulation)."""
    closure = source.resolve([meta])
    images = [
        d
        for d in closure
        if d.name.startswith("linux-image-")
        and d.name != meta
        and re.match(r"linux-image-\d", d.name)
    ]
    if not images:
        if re.match(r"linux-image-\d", meta):  # the board named a versioned package itself
            images = [d for d in closure if d.name == meta]
        if not images:
            raise UserError(
                f"{meta} ({source.suite}/{source.arch}) depends on no linux-image-KVER package"
            )
    return images[-1]


def describe(kernel: Kernel) -> str:
    """One line for logs: which kernel boots."""
    direct = " (direct ELF boot)" if kernel.vmlinux else ""
    return f"{kernel.package} {kernel.version} [{kernel.release}]{direct}"
