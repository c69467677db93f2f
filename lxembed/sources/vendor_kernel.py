"""A board's own kernel ([kernel]): a package `make bindeb-pkg` wrote, or a kernel build's files.

What comes out is the same Kernel a Debian kernel is (image, /lib/modules/RELEASE, config,
device trees), so the modules segment, qemu boots, FIT and SD card images and `kernel-check`
use it unchanged. It is checked against the board first: the architecture it was built for, and
one release across the image's banner, the modules directory and the modules' vermagic, each
error naming the board line. A package or a modules tarball is unpacked once per content under
cache_dir()/kernels/local/; a modules directory is read in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from ..arch import ARCHES, KERNEL_IMAGES, Arch, get_arch
from ..compression import decompress, kind_by_magic, kind_by_name
from ..config import Board
from ..config.toml_lines import key_line
from ..errors import UserError
from ..log import step
from ..paths import cache_dir, file_lock, file_sha256
from .apt import Deb
from .kernel_modules import ModuleIndex, read_modinfo
from .kernel_unpack import Kernel, _unpack, kernel_arch, unpacked_pin

Where = Callable[[str], str]  # key -> "BOARD:LINE: [kernel] KEY"
_BANNER = re.compile(rb"Linux version (\S+) \(")  # linux_banner, in an uncompressed image
_MODULES_FILES = ("modules.order", "modules.builtin", "modules.dep")


def vendor_kernel(board: Board) -> Kernel:
    """The board's [kernel], checked against the board and unpacked where it needs to be."""
    spec = board.settings["kernel"]
    text = board.path.read_text(encoding="utf-8")

    def where(key: str) -> str:
        return f"{board.path}:{key_line(text, 'kernel', key)}: [kernel] {key}"

    expected = get_arch(kernel_arch(board))
    if spec["package"]:
        kernel = _from_package(Path(spec["package"]), expected, where)
    else:
        kernel = _from_files(Path(spec["image"]), Path(spec["modules"]), expected, where)
    if not _checked_before(kernel, expected):
        check_kernel(kernel, expected, where, "package" if spec["package"] else "image")
        _checked_before(kernel, expected, record=True)
    config = Path(spec["config"]) if spec["config"] else kernel.config
    dtbs = Path(spec["dtbs"]) if spec["dtbs"] else kernel.dtbs
    return replace(kernel, config=config, dtbs=dtbs)


# -- a package (make bindeb-pkg) --------------------------------------------------------------
def _from_package(path: Path, expected: Arch, where: Where) -> Kernel:
    digest = file_digest(path)
    # Unpacked before: its pin has the control fields (no dpkg-deb run on every build).
    data = next(filter(None, map(unpacked_pin, local_cache().glob(f"*_*-{digest[:16]}"))), None)
    name, version, arch = ((data["package"], data["version"], data["arch"]) if data
                           else _control(path, where("package")))
    built_for = ARCHES.get(arch)
    if built_for is None or _machine(built_for) != _machine(expected):
        raise UserError(f"{where('package')}: {path.name} is a kernel for {arch}, but the "
                        f"board's kernel runs on {expected.debian}")
    root = local_cache() / f"{name}_{version.replace(':', '%3a')}_{arch}-{digest[:16]}"
    if data is None:
        with file_lock(root.with_name(f".{root.name}.lock")):
            data = unpacked_pin(root)
            if data is None:
                with step(f"kernel {name} {version} ({path.name})"):
                    try:
                        _unpack(Deb(name, version, arch, path), root, path.name)
                    except UserError as err:
                        raise UserError(f"{where('package')}: {err}") from None
                data = unpacked_pin(root)
                if data is None:  # unpacked whole, but no lib/modules/RELEASE: not kept
                    message = _missing_modules(root, path)
                    shutil.rmtree(root, ignore_errors=True)
                    raise UserError(f"{where('package')}: {message}")
                _keep_only_current(root, path)
    release = data["release"]
    config = root / "boot" / f"config-{release}"
    return Kernel(name, version, path.name, arch, release, root / data["image"],
                  root / data["vmlinux"] if data.get("vmlinux") else None,
                  root / "lib" / "modules" / release, root / "dtbs",
                  config if config.is_file() else None, digest)


def _control(path: Path, where: str) -> Tuple[str, str, str]:
    """Package, Version, Architecture of a .deb, read by dpkg-deb."""
    proc = subprocess.run(["dpkg-deb", "--field", str(path), "Package", "Version",
                           "Architecture"], capture_output=True, text=True)
    fields = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    if proc.returncode != 0 or len(fields) != 3:
        why = (proc.stderr.strip().splitlines() or ["no Package, Version, Architecture"])[-1]
        raise UserError(f"{where}: {path}: not a Debian package ({why})")
    return fields["Package"], fields["Version"], fields["Architecture"]


def _missing_modules(root: Path, path: Path) -> str:
    data = json.loads((root / "kernel.json").read_text())
    found = sorted(p.name for p in (root / "lib" / "modules").glob("*") if p.is_dir())
    has = f"its modules are for {', '.join(found)}" if found else "it has no /lib/modules"
    return (f"{path.name} has /{data['image']}, but {has}: the kernel's release and its "
            f"modules directory must be one (/lib/modules/{data['release']})")


# -- files: an image and a modules_install tree -----------------------------------------------
def _from_files(image: Path, modules: Path, expected: Arch, where: Where) -> Kernel:
    tarball = modules.is_file()
    tree = _unpacked_tarball(modules, where("modules")) if tarball else modules
    release_dir = _release_dir(tree, where("modules"))
    # An unpacked tarball is the tarball's content; a directory in place is read for changes.
    modules_digest = file_digest(modules) if tarball else _tree_digest(release_dir)
    digest = hashlib.sha256(f"{file_digest(image)} {modules_digest}".encode())
    return Kernel(image.name, "local", "", expected.debian, release_dir.name, image, None,
                  release_dir, None, None, digest.hexdigest())


def _release_dir(root: Path, where: str) -> Path:
    """lib/modules/RELEASE in a modules_install tree: ROOT itself, or the one directory below
    ROOT, ROOT/lib/modules or ROOT/usr/lib/modules that holds modules.order (.builtin, .dep)."""
    def is_release(d: Path) -> bool:
        return any((d / f).is_file() for f in _MODULES_FILES)
    if is_release(root):
        return root
    found = [d for parent in (root, root / "lib" / "modules", root / "usr" / "lib" / "modules")
             if parent.is_dir() for d in sorted(parent.iterdir())
             if d.is_dir() and is_release(d)]
    if not found:
        raise UserError(f"{where}: no lib/modules/RELEASE with modules.order in {root}: not a "
                        "`make modules_install` tree")
    if len(found) > 1:
        raise UserError(f"{where}: {root} holds the modules of several releases "
                        f"({', '.join(d.name for d in found)}); name one directory")
    return found[0]


def _unpacked_tarball(tarball: Path, where: str) -> Path:
    """A modules tarball, unpacked (by GNU tar: any compression it reads) once per content."""
    root = local_cache() / f"modules-{file_digest(tarball)[:16]}"
    if root.is_dir():
        return root
    with file_lock(root.with_name(f".{root.name}.lock")):
        if root.is_dir():
            return root
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        try:
            proc = subprocess.run(["tar", "--extract", "--file", str(tarball), "--directory",
                                   str(tmp), "--no-same-owner"], capture_output=True, text=True)
            if proc.returncode != 0:
                why = (proc.stderr.strip().splitlines() or ["tar failed"])[-1]
                raise UserError(f"{where}: {tarball}: cannot unpack it ({why})")
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _keep_only_current(root, tarball)
    return root


def _tree_digest(directory: Path) -> str:
    """A digest of a directory by its files' names, sizes and times (the modules tree is
    ~4,000 files: hashing their content on every boot would cost seconds)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, directory)  # no host path in the pin
            h.update(f"{rel} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# -- the checks ---------------------------------------------------------------------------------
def check_kernel(kernel: Kernel, expected: Arch, where: Where, image_key: str) -> None:
    """The image and the modules are for the board's architecture and for one release."""
    data = kernel.image.read_bytes()
    if kind_by_magic(data) == "gz":  # Image.gz: what bindeb-pkg installs on arm64
        data = decompress(data, "gz", str(kernel.image))
    what, machines = image_kind(data)
    if what is None:
        known = ", ".join(["an ELF vmlinux"] + [k[0] for k in KERNEL_IMAGES])
        raise UserError(f"{where(image_key)}: {kernel.image.name} is not a kernel image "
                        f"lxembed knows ({known}; gzip-compressed too)")
    if _machine(expected) not in machines:
        raise UserError(f"{where(image_key)}: {kernel.image.name} is {what}, a kernel for "
                        f"{_arches(machines)}, but the board's kernel runs on {expected.debian}")
    modules_where = where("modules" if image_key == "image" else image_key)
    module = _one_module(kernel, expected, modules_where)
    banner = _BANNER.search(data)
    if banner and banner.group(1).decode(errors="replace") != kernel.release:
        raise UserError(f"{where(image_key)}: {kernel.image.name} is Linux "
                        f"{banner.group(1).decode(errors='replace')}, but its modules are for "
                        f"{kernel.release} ({kernel.modules})")
    if module is not None:
        relpath, modinfo = module
        vermagic = (modinfo.get("vermagic") or ["?"])[0].split(" ")[0]
        if vermagic != kernel.release:
            raise UserError(f"{modules_where}: {relpath} was built for Linux {vermagic} (its "
                            f"vermagic), but sits in lib/modules/{kernel.release}")


def _one_module(kernel: Kernel, expected: Arch, where: str) -> Optional[Tuple[Path, dict]]:
    """One module stands for all: checked for the board's ELF machine; (its path, .modinfo),
    None for a kernel with everything built in."""
    index = ModuleIndex(kernel.modules)
    for path in sorted(index.files.values()):  # modules.order says .ko; files may be .ko.xz
        found = [p for p in (path, *(path.with_name(path.name + s) for s in (".xz", ".zst",
                                                                              ".gz")))
                 if p.is_file()]
        if found:
            break
    else:
        return None
    data = decompress(found[0].read_bytes(), kind_by_name(found[0].name), str(found[0]))
    relpath = found[0].relative_to(kernel.modules)
    what, machines = image_kind(data)
    if what != "an ELF vmlinux":
        raise UserError(f"{where}: {relpath} is not a kernel module (not ELF)")
    if _machine(expected) not in machines:
        raise UserError(f"{where}: {relpath} is a module for {_arches(machines)}, but the "
                        f"board's kernel runs on {expected.debian}")
    return relpath, read_modinfo(data, str(found[0]))


def image_kind(data: bytes) -> Tuple[Optional[str], frozenset]:
    """(what the image is, the (e_machine, ELF class) pairs it boots); (None, {}) if unknown."""
    if data[:4] == b"\x7fELF" and len(data) > 20:
        elf_class = 64 if data[4] == 2 else 32
        machine = int.from_bytes(data[18:20], "little" if data[5] == 1 else "big")
        return "an ELF vmlinux", frozenset({(machine, elf_class)})
    for what, offset, magic, machines in KERNEL_IMAGES:
        if data[offset:offset + len(magic)] == magic:
            return f"an {what}", frozenset((a.elf_machine, a.elf_class) for a in ARCHES.values()
                                           if a.elf_machine in machines)
    return None, frozenset()


def _machine(arch: Arch) -> Tuple[int, int]:
    return arch.elf_machine, arch.elf_class


def _arches(machines: frozenset) -> str:
    """The kernel architectures a set of (e_machine, ELF class) pairs names."""
    names = sorted({a.kernel_arch for a in ARCHES.values() if _machine(a) in machines})
    return "/".join(names) or "another architecture"


# -- the cache ------------------------------------------------------------------------------------
def local_cache() -> Path:
    path = cache_dir() / "kernels" / "local"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _checked_before(kernel: Kernel, expected: Arch, record: bool = False) -> bool:
    """Has this kernel (by its digest) passed check_kernel for this architecture? Reading the
    image and a module costs ~70 ms, on every build otherwise."""
    path = local_cache() / "checked.json"
    key = f"{kernel.digest} {expected.elf_machine} {expected.elf_class}"
    try:
        known = set(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        known = set()
    if record and key not in known:
        tmp = path.with_name(f".checked.{os.getpid()}")
        tmp.write_text(json.dumps(sorted(known | {key})[-256:]))
        os.replace(tmp, path)
    return key in known


def _keep_only_current(root: Path, source: Path) -> None:
    """Record that `source` is unpacked at `root`, and remove what is unpacked for files that
    are gone or have changed since (a rebuilt vendor kernel replaces its previous copy)."""
    record_path = local_cache() / "sources.json"
    with file_lock(record_path.with_name(".sources.lock")):
        try:
            record: Dict[str, list] = json.loads(record_path.read_text())
        except (OSError, ValueError):
            record = {}
        record.setdefault(root.name, [])
        record[root.name] = sorted(set(record[root.name]) | {str(source)})
        for name, sources in list(record.items()):
            current = [s for s in sources
                       if os.path.isfile(s) and name.endswith("-" + file_digest(Path(s))[:16])]
            if current:
                record[name] = current
            else:
                shutil.rmtree(local_cache() / name, ignore_errors=True)
                del record[name]
        tmp = record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
        os.replace(tmp, record_path)


def file_digest(path: Path) -> str:
    """SHA256 of a local file, hashed again only when it changed (by size, times, inode)."""
    memo_path = local_cache() / "digests.json"
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    try:
        memo: Dict[str, list] = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    known = memo.get(str(path))
    if isinstance(known, list) and known[:4] == stamp:
        return known[4]
    digest = file_sha256(path)
    with file_lock(memo_path.with_name(".digests.lock")):
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
        memo = {p: v for p, v in memo.items() if os.path.exists(p)}  # forget deleted files
        memo[str(path)] = stamp + [digest]
        tmp = memo_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(memo, indent=0, sort_keys=True))
        os.replace(tmp, memo_path)
    return digest
