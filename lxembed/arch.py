"""The architecture table: the one place that knows per-architecture facts."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Optional

from .errors import UserError

# ELF constants (e_machine values and flags) used to identify binaries.
EM_386 = 3
EM_MIPS = 8
EM_ARM = 40
EM_X86_64 = 62
EM_AARCH64 = 183
EM_RISCV = 243


@dataclass(frozen=True)
class Arch:
    """Everything lxembed needs to know about one target architecture."""

    debian: str  # Debian architecture name (dpkg --print-architecture)
    triplet: str  # multiarch tuple, e.g. aarch64-linux-gnu
    elf_class: int  # 32 or 64
    elf_endian: str  # "little" or "big"
    elf_machine: int  # e_machine
    float_abi: Optional[str]  # ARM only: "hard" or "soft"
    mips_abi: Optional[str]  # MIPS only: "o32", "n32", "n64"
    uname: tuple  # what `uname -m` may print on this arch (first is canonical)
    qemu_user: str  # qemu-user binary (static build)
    qemu_system: str  # qemu-system binary
    qemu_machine: str
    qemu_cpu: Optional[str]
    console: str  # kernel serial console device
    kernel_arch: str  # Debian arch whose kernel boots this userland
    kernel_package: str  # Debian kernel meta-package
    kernel_flavour: str  # suffix of the kernel ABI name, e.g. "arm64" in 6.1.0-28-arm64
    oci: str  # OCI/Go GOARCH name
    oci_variant: Optional[str]
    lxc: str  # lxc.arch value
    nic: str  # qemu NIC device/model for -netdev user
    nic_modules: tuple = field(default=())  # kernel modules for that NIC, in load order
    ld_so: tuple = field(default=())  # dynamic loader paths (PT_INTERP) of this arch
    mips_nan: Optional[str] = None  # MIPS only: NaN encoding, "legacy" or "2008"
    # -cpu for build-time qemu-user runs (None: qemu's default). arm64: qemu-user's default
    # "max" emulates pointer authentication (QARMA5) in software, which trixie's binaries use
    # at every call: python3.13 starts in 0.7 s under it, 0.28 s on the boards' cortex-a57.
    qemu_user_cpu: Optional[str] = None
    incus: str = ""  # Incus's (and LXD's) architecture name, metadata.yaml's `architecture`
    uboot: str = ""  # mkimage's -A / a FIT image's `arch` for this arch's kernel
    riscv_abi: Optional[str] = None  # RISC-V only: float ABI, "lp64d", "lp64f" or "lp64"
    qemu_bios: Optional[str] = None  # qemu -bios for a direct kernel boot (RISC-V: OpenSBI)

    @property
    def qemu_user_path(self) -> str:
        return f"/usr/bin/{self.qemu_user}-static"

    @property
    def qemu_system_path(self) -> str:
        return f"/usr/bin/{self.qemu_system}"

    @property
    def libvirt(self) -> str:
        """libvirt's <type arch=...>: the lxc.arch name, but ARM by its uname (libvirt has no
        armhf/armel, and armel userland runs on the armv7 kernel here)."""
        return self.uname[0] if self.elf_machine == EM_ARM else self.lxc

    def is_host(self) -> bool:
        return host_arch() is self


_VIRTIO_PCI_X86 = ("virtio", "virtio_ring", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
                   "virtio_pci", "failover", "net_failover", "virtio_net")
_VIRTIO_PCI_ARM = ("virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
                   "failover", "net_failover", "virtio_net")

ARCHES = {
    a.debian: a
    for a in (
        Arch("amd64", "x86_64-linux-gnu", 64, "little", EM_X86_64, None, None, ("x86_64",),
             "qemu-x86_64", "qemu-system-x86_64", "pc", "max", "ttyS0", "amd64",
             "linux-image-amd64", "amd64", "amd64", None, "x86_64",
             "virtio-net-pci", _VIRTIO_PCI_X86, ("/lib64/ld-linux-x86-64.so.2",),
             incus="x86_64", uboot="x86_64"),
        Arch("i386", "i386-linux-gnu", 32, "little", EM_386, None, None, ("i686", "i586", "i386"),
             "qemu-i386", "qemu-system-i386", "pc", "max", "ttyS0", "i386",
             "linux-image-686", "686", "386", None, "i686",
             "virtio-net-pci", _VIRTIO_PCI_X86, ("/lib/ld-linux.so.2",),
             incus="i686", uboot="x86"),
        Arch("arm64", "aarch64-linux-gnu", 64, "little", EM_AARCH64, None, None, ("aarch64",),
             "qemu-aarch64", "qemu-system-aarch64", "virt", "cortex-a57", "ttyAMA0", "arm64",
             "linux-image-arm64", "arm64", "arm64", None, "aarch64",
             "virtio-net-pci", _VIRTIO_PCI_ARM, ("/lib/ld-linux-aarch64.so.1",),
             incus="aarch64", uboot="arm64",
             qemu_user_cpu="cortex-a57"),
        Arch("armhf", "arm-linux-gnueabihf", 32, "little", EM_ARM, "hard", None,
             ("armv7l", "armv8l"),
             "qemu-arm", "qemu-system-arm", "virt,highmem=off", "cortex-a15", "ttyAMA0", "armhf",
             "linux-image-armmp", "armmp", "arm", "v7", "armhf",
             "virtio-net-pci", _VIRTIO_PCI_ARM, ("/lib/ld-linux-armhf.so.3",),
             incus="armv7l", uboot="arm"),
        # armel userland runs on the armhf (armmp) kernel on qemu's virt machine.
        Arch("armel", "arm-linux-gnueabi", 32, "little", EM_ARM, "soft", None,
             ("armv7l", "armv5tel", "armv8l"),
             "qemu-arm", "qemu-system-arm", "virt,highmem=off", "cortex-a15", "ttyAMA0", "armhf",
             "linux-image-armmp", "armmp", "arm", "v5", "armel",
             "virtio-net-pci", _VIRTIO_PCI_ARM, ("/lib/ld-linux.so.3",),
             incus="armv6l", uboot="arm"),  # Incus's "armel": the oldest ARM it knows
        Arch("mipsel", "mipsel-linux-gnu", 32, "little", EM_MIPS, None, "o32", ("mips",),
             "qemu-mipsel", "qemu-system-mipsel", "malta", None, "ttyS0", "mipsel",
             "linux-image-4kc-malta", "4kc-malta", "mipsle", None, "mipsel",
             "pcnet", ("mii", "pcnet32"), ("/lib/ld.so.1",), "legacy",
             incus="mips", uboot="mips"),
        Arch("mips64el", "mips64el-linux-gnuabi64", 64, "little", EM_MIPS, None, "n64",
             ("mips64",),
             "qemu-mips64el", "qemu-system-mips64el", "malta", "5KEc", "ttyS0", "mips64el",
             "linux-image-5kc-malta", "5kc-malta", "mips64le", None, "mips64el",
             "pcnet", ("mii", "pcnet32"), ("/lib64/ld.so.1",), "legacy",
             incus="mips64", uboot="mips64"),
        # RISC-V: OpenSBI (the machine-mode firmware qemu-system-data ships) starts the kernel
        # in supervisor mode. Debian's riscv64 port is RV64GC with the double-float ABI.
        Arch("riscv64", "riscv64-linux-gnu", 64, "little", EM_RISCV, None, None, ("riscv64",),
             "qemu-riscv64", "qemu-system-riscv64", "virt", None, "ttyS0", "riscv64",
             "linux-image-riscv64", "riscv64", "riscv64", None, "riscv64",
             "virtio-net-pci", _VIRTIO_PCI_ARM, ("/lib/ld-linux-riscv64-lp64d.so.1",),
             incus="riscv64", uboot="riscv", riscv_abi="lp64d",
             qemu_bios="/usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.bin"),
    )
}

# Kernel boot images that are not ELF (a vmlinux is): (what it is, offset, magic, the e_machine
# values it boots). A board's own kernel is checked against these (lxembed.sources.vendor_kernel).
KERNEL_IMAGES = (
    ("arm64 Image", 0x38, b"ARM\x64", frozenset({EM_AARCH64})),  # Documentation/arch/arm64/booting
    ("ARM zImage", 0x24, b"\x18\x28\x6f\x01", frozenset({EM_ARM})),  # 0x016f2818, LE
    ("x86 bzImage", 0x202, b"HdrS", frozenset({EM_386, EM_X86_64})),  # the boot protocol header
)

# `uname -m` of the hosts lxembed runs on, and the Debian architecture of their userland.
# Others (riscv64 hosts: untested; armv8l: a 32-bit userland on a 64-bit CPU; ppc64le...) are
# refused rather than guessed: qemu-user and bind-host containers would pick the wrong binaries.
HOST_MACHINES = {"x86_64": "amd64", "aarch64": "arm64", "i686": "i386", "armv7l": "armhf",
                 "mips": "mipsel", "mips64": "mips64el"}


def get_arch(name: str) -> Arch:
    """Look an architecture up by its Debian name."""
    try:
        return ARCHES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHES))
        raise UserError(f"unknown architecture {name!r} (known: {known})") from None


def host_arch() -> Arch:
    """The architecture of the machine lxembed runs on."""
    machine = platform.machine()
    try:
        return ARCHES[HOST_MACHINES[machine]]
    except KeyError:
        known = ", ".join(sorted(HOST_MACHINES))
        raise UserError(f"host machine {machine!r}: not supported (lxembed runs on {known})",
                        hint="build on one of those, or in a VM of one") from None
