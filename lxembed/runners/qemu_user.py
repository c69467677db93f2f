"""Run checks in an image's tree without a kernel: chroot + a binfmt_misc handler for qemu-user.

`qemu-ARCH -L TREE TREE/bin/busybox sh -c CMD` is not enough: every command the shell execs goes
to the host kernel, which runs the host's /bin/cat (or fails) instead of the image's. So the
runner registers a binfmt_misc handler for the image's ELF header, with the F flag (qemu is
opened at registration, so it works inside the chroot) and the P flag with Debian's
`*-binfmt-P` interpreter (argv[0] is preserved: busybox picks its applet by argv[0], and
without P every exec'd applet runs as the wrong one). Each handler is named after this process
and removed when the run ends; handlers of dead runs are cleaned up.

Each check runs in private mount and PID namespaces: the tree is bind-mounted read-only (a check
cannot change the image), with fresh /proc, /tmp, /run and a /dev of the usual harmless nodes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

from ..arch import Arch
from ..errors import UserError
from ..log import warn
from ..paths import cache_dir
from . import Check, TestReport, run_check

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMTS = Path("/usr/share/binfmts")  # qemu-user-static's handler descriptions
CHECK_TIMEOUT = 30.0  # seconds; qemu-user commands take milliseconds
_PREFIX = "lxembed-"

# Host sh script run in the new namespaces: $1 = tree, $2 = command.
_SANDBOX = r"""
set -e
R=$1
mount --bind "$R" "$R"
mount -o remount,bind,ro "$R"
[ -d "$R/proc" ] && mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
[ -d "$R/tmp" ] && mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/tmp"
[ -d "$R/run" ] && mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$R/run"
if [ -d "$R/dev" ]; then
    mount -t tmpfs -o mode=0755,nosuid tmpfs "$R/dev"
    for n in null zero full random urandom tty; do
        : > "$R/dev/$n"
        mount --bind "/dev/$n" "$R/dev/$n"
    done
fi
cd "$R"
exec chroot "$R" /bin/sh -c "$2"
"""
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "TERM": "dumb", "LC_ALL": "C"}


def _binfmt_fields(arch: Arch) -> Dict[str, str]:
    """Magic, mask, offset and interpreter for `arch`: qemu-user-static's description, or
    (Debian ships none for i386 on amd64) one made from the arch table's ELF facts."""
    path = BINFMTS / arch.qemu_user  # e.g. /usr/share/binfmts/qemu-aarch64
    if path.exists():
        fields = {}
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
        return fields
    if not os.path.exists(arch.qemu_user_path):
        raise UserError(
            f"{arch.qemu_user_path} is not installed", hint="apt-get install qemu-user-static"
        )
    # ELF ident (class, data, version), then e_type EXEC (the mask lets DYN through) and
    # e_machine: the same header qemu's own qemu-binfmt-conf.sh matches.
    order = "little" if arch.elf_endian == "little" else "big"
    magic = (
        b"\x7fELF"
        + bytes([1 if arch.elf_class == 32 else 2, 1 if order == "little" else 2, 1])
        + bytes(9)
        + (2).to_bytes(2, order)
        + arch.elf_machine.to_bytes(2, order)
    )
    mask = b"\xff" * 7 + b"\x00" + b"\xff" * 8 + (b"\xfe\xff" if order == "little" else b"\xff\xfe")
    mask += b"\xff\xff"
    # qemu takes argv[0]-preserving (P) mode from an interpreter name ending in -binfmt-P.
    short = arch.qemu_user[len("qemu-") :]
    interpreter = Path(f"/usr/libexec/qemu-binfmt/{short}-binfmt-P")
    if not interpreter.exists():
        interpreter = cache_dir() / "binfmt" / f"{short}-binfmt-P"
        interpreter.parent.mkdir(exist_ok=True)
        if not interpreter.is_symlink():
            interpreter.symlink_to(arch.qemu_user_path)
    return {
        "magic": _escape(magic),
        "mask": _escape(mask),
        "offset": "0",
        "interpreter": str(interpreter),
        "preserve": "yes",
    }


def _escape(data: bytes) -> str:
    return "".join(f"\\x{b:02x}" for b in data)


def _unescape(text: str) -> bytes:
    return bytes(int(h, 16) for h in re.findall(r"\\x([0-9a-fA-F]{2})", text))


def _matches(header: bytes, magic: bytes, mask: bytes) -> bool:
    if len(header) < len(magic):
        return False
    return all((h & m) == (g & m) for h, g, m in zip(header, magic, mask))


class BinfmtHandler:
    """A binfmt_misc handler for one architecture, for the life of a `with` block."""

    def __init__(self, arch: Arch):
        self.arch = arch
        self.name = f"{_PREFIX}{os.getpid()}-{arch.qemu_user}"
        self.entry = BINFMT_DIR / self.name

    def _line(self) -> str:
        f = _binfmt_fields(self.arch)
        magic, mask = f.get("magic", ""), f.get("mask", "")
        offset = f.get("offset", "0")
        interpreter = f.get("interpreter") or self.arch.qemu_user_path
        preserve = f.get("preserve", "no") == "yes" and interpreter.endswith("-binfmt-P")
        if not preserve:
            warn(
                f"{interpreter}: no preserve-argv0 interpreter; busybox applets that are "
                "exec'd may run as the wrong applet"
            )
        raw_magic, raw_mask = _unescape(magic), _unescape(mask)
        if not raw_magic or len(raw_magic) != len(raw_mask) or ":" in magic + mask:
            raise UserError(f"{BINFMTS / self.arch.qemu_user}: unusable magic/mask")
        # Never register something that matches the host's own programs (qemu itself, sh):
        # the kernel would hand every host exec to qemu and the host would stop working.
        for host_binary in (os.path.realpath(interpreter), "/bin/sh", "/usr/bin/env"):
            with open(host_binary, "rb") as fh:
                header = fh.read(int(offset) + len(raw_magic))[int(offset) :]
            if _matches(header, raw_magic, raw_mask):
                raise UserError(
                    f"refusing a binfmt handler for {self.arch.debian} that matches "
                    f"the host's {host_binary}"
                )
        flags = "FP" if preserve else "F"
        return f":{self.name}:M:{offset}:{magic}:{mask}:{interpreter}:{flags}"

    def __enter__(self) -> "BinfmtHandler":
        _ensure_binfmt_misc()
        _remove_stale()
        if self.entry.exists():
            self.entry.write_text("-1")
        line = self._line()
        try:
            (BINFMT_DIR / "register").write_text(line)
        except OSError as err:
            raise UserError(f"cannot register a binfmt_misc handler: {err.strerror}") from None
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.entry.write_text("-1")
        except OSError:
            pass


def _ensure_binfmt_misc() -> None:
    """Mount binfmt_misc if it is not; it stays mounted, as systemd would have it.

    Since Linux 6.7 the handlers of an instance vanish with its last mount, so a mount in a
    private namespace would take the handler with it.
    """
    if (BINFMT_DIR / "register").exists():
        return
    result = subprocess.run(
        ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 and not (BINFMT_DIR / "register").exists():
        raise UserError(f"cannot mount binfmt_misc: {result.stderr.strip()}")


def _remove_stale() -> None:
    """Remove handlers left by lxembed runs that died before cleaning up."""
    for entry in BINFMT_DIR.glob(f"{_PREFIX}*"):
        m = re.match(rf"{_PREFIX}(\d+)-", entry.name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            try:
                entry.write_text("-1")
            except OSError:
                pass


def run_in_tree(root: Path, command: str, timeout: float = CHECK_TIMEOUT) -> "tuple":
    """(exit status or None on timeout, output) of `command` run by the tree's /bin/sh."""
    argv = [
        "unshare",
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
        "sh",
        "-c",
        _SANDBOX,
        "lxembed-sandbox",
        str(root),
        command,
    ]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_ENV,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out.decode("utf-8", "replace").rstrip("\n")
    return proc.returncode, out.decode("utf-8", "replace").rstrip("\n")


def check_tree(
    board: str,
    recipe: str,
    arch: Arch,
    root: Path,
    checks: Sequence[Check],
    timeout: Optional[float] = None,
) -> TestReport:
    """Run `checks` in the image tree at `root` under the board's qemu-user."""
    timeout = timeout or CHECK_TIMEOUT
    if not (root / "bin" / "sh").exists() and not (root / "bin").is_symlink():
        raise UserError(f"{root} has no /bin/sh: the checks need a shell in the image")
    for tool in ("unshare", "chroot", "mount"):
        if shutil.which(tool, path=_ENV["PATH"]) is None:
            raise UserError(f"{tool} is not installed", hint="apt-get install util-linux")
    if os.geteuid() != 0:
        raise UserError(
            "lxembed test --user needs root (binfmt_misc, chroot, mounts)",
            hint="run it as root, or boot the image: lxembed test (no --user)",
        )
    # The host's own architecture runs natively: a handler for it would catch every host
    # program (and is refused above).
    native = arch.is_host()
    report = TestReport(board, recipe, "user", "native" if native else arch.qemu_user)
    start = time.monotonic()
    with contextlib.nullcontext() if native else BinfmtHandler(arch):
        for check in checks:
            report.checks.append(run_check(check, lambda cmd: run_in_tree(root, cmd, timeout),
                                           timeout, "killed"))
    report.seconds = round(time.monotonic() - start, 3)
    return report
