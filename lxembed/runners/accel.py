"""KVM or TCG: use KVM only when it can really run the guest, and scale timeouts for TCG.

`/dev/kvm` existing proves little: on this machine kind it is a software "kvm-pvm" without
VT-x/AMD-V, and a stock Debian kernel under `-accel kvm` hangs or dies with "emulation failure".
So KVM needs: the guest arch is the host's, /dev/kvm opens read-write and answers
KVM_GET_API_VERSION, and (x86) the CPU advertises vmx or svm.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from typing import Optional, Tuple

from ..arch import Arch
from ..errors import UserError

KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12

# How much slower than KVM a TCG guest is for timeouts. Generous on purpose: a shared 2-core
# host under load boots mipsel in ~5 s that takes <1 s under KVM.
TCG_SCALE = 6.0


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    reason: str  # why, for logs and --json
    scale: float  # multiply KVM-sized timeouts by this

    def qemu_args(self) -> list:
        if self.name == "kvm":
            return ["-accel", "kvm"]
        # One translation thread per vCPU (MTTCG) is qemu's default where the guest allows it.
        return ["-accel", "tcg"]

    def timeout(self, kvm_seconds: float) -> float:
        return kvm_seconds * self.scale


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def kvm_usable(arch: Arch) -> Tuple[bool, str]:
    """(usable, reason) for a guest of `arch` on this host."""
    if not arch.is_host():
        return False, f"{arch.debian} guest on a different host architecture"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        return False, f"/dev/kvm: {err.strerror}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as err:
        return False, f"/dev/kvm does not answer KVM_GET_API_VERSION ({err.strerror})"
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return False, f"/dev/kvm speaks API {version}, not {KVM_API_VERSION}"
    if arch.debian in ("amd64", "i386"):
        flags = _cpu_flags()
        if not flags & {"vmx", "svm"}:
            # A paravirtual KVM (kvm-pvm) without hardware virtualisation: cannot run a
            # stock kernel, whatever /dev/kvm says.
            return False, "/dev/kvm exists but the CPU has no vmx/svm flag (software KVM)"
    return True, "hardware virtualisation for the host architecture"


def choose_accel(arch: Arch, requested: Optional[str] = None) -> Accel:
    """KVM when it works, else TCG; `requested` (or LXEMBED_ACCEL) forces one."""
    requested = requested or os.environ.get("LXEMBED_ACCEL") or "auto"
    if requested not in ("auto", "kvm", "tcg"):
        raise UserError(f"unknown accelerator {requested!r} (auto, kvm or tcg)")
    if requested == "tcg":
        return Accel("tcg", "requested", TCG_SCALE)
    usable, reason = kvm_usable(arch)
    if requested == "kvm":
        if not usable:
            raise UserError(f"KVM was requested but cannot run this guest: {reason}")
        return Accel("kvm", "requested", 1.0)
    if usable:
        return Accel("kvm", reason, 1.0)
    return Accel("tcg", reason, TCG_SCALE)
