"""The exact set of libraries a program loads, found the way glibc's ld.so finds them.

Search order per DT_NEEDED name (glibc elf/dl-load.c, _dl_map_object):
  1. a name already loaded (by the name it was asked for, or its DT_SONAME) is reused;
  2. DT_RPATH of the requesting object, then of its loader, and so on up to the program,
     only when the requesting object has no DT_RUNPATH (an object with both ignores RPATH);
  3. DT_RUNPATH of the requesting object only;
  4. the directories of the sysroot's /etc/ld.so.conf (what ldconfig puts into the cache),
     then the loader's built-in directories; both skipped for DF_1_NODEFLIB objects.
Objects for another architecture found on the way are skipped, as ld.so skips them.
Libraries load breadth-first, so the first object to need a name decides where it is found.
"""

from __future__ import annotations

import posixpath
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set, Tuple

from ..arch import EM_ARM, Arch
from ..errors import UserError
from ..tree import FILE, RootfsTree
from .identify import ElfInfo, identify, is_elf, runs_on
from .sysroot import HostSysroot, Sysroot, Trace, TreeSysroot

__all__ = [
    "Closure",
    "HostSysroot",
    "LoadedObject",
    "MissingLibrary",
    "ProgramClosure",
    "LibraryResolver",
    "Sysroot",
    "TreeSysroot",
    "check_tree_arch",
    "default_library_dirs",
    "elf_closure",
    "ld_so_conf_dirs",
    "wrong_arch_message",
]

# Files the CPU never runs: device firmware may be ELF for a DSP or a remote processor.
NOT_FOR_THE_CPU = ("/lib/firmware/", "/usr/lib/firmware/")


@dataclass
class LoadedObject:
    """One object in a program's link map."""

    name: str  # what was asked for: a DT_NEEDED name, the PT_INTERP path, or the program path
    path: str  # where it was found, as ld.so prints it
    trace: Trace
    info: ElfInfo
    loader: Optional["LoadedObject"] = None  # the object whose DT_NEEDED loaded it

    @property
    def real_path(self) -> str:
        return self.trace.real_path

    def chain(self) -> Tuple[str, ...]:
        """This object's path, then its loader's, and on up to the program."""
        out, obj = [], self
        while obj is not None:
            out.append(obj.path)
            obj = obj.loader
        return tuple(out)


@dataclass
class MissingLibrary:
    name: str
    chain: Tuple[str, ...]  # the object that needed it, its loader, ..., the program
    searched: Tuple[str, ...] = ()
    is_interp: bool = False

    def message(self) -> str:
        if self.is_interp:
            return f"{self.name} not found: the dynamic loader (PT_INTERP) of {self.chain[0]}"
        return f"{self.name} not found: " + " <- ".join(f"needed by {p}" for p in self.chain)


@dataclass
class ProgramClosure:
    """The link map of one program (or library) and what could not be found."""

    path: str
    info: Optional[ElfInfo]  # None when the file is not ELF (a script, data)
    objects: List[LoadedObject] = field(default_factory=list)  # load order, loader last
    missing: List[MissingLibrary] = field(default_factory=list)
    root: Optional[LoadedObject] = None
    # (name, path or None when not found) in ldd's order, the loader last as (path, path)
    ldd_lines: List[Tuple[str, Optional[str]]] = field(default_factory=list)


@dataclass
class Closure:
    """The closure of several programs: what an image needs so that all of them run."""

    programs: List[ProgramClosure]

    def objects(self) -> List[LoadedObject]:
        """Loaded objects (libraries and loaders, not the programs asked about), one per file."""
        roots = {p.root.real_path for p in self.programs if p.root}
        seen: Dict[str, LoadedObject] = {}
        for program in self.programs:
            for obj in program.objects:
                if obj.real_path not in roots:
                    seen.setdefault(obj.real_path, obj)
        return list(seen.values())

    @property
    def paths(self) -> Set[str]:
        """Library paths as the loader opens them."""
        return {o.path for p in self.programs for o in p.objects} - self._root_paths()

    @property
    def real_paths(self) -> Set[str]:
        return {o.real_path for o in self.objects()}

    @property
    def symlinks(self) -> Set[str]:
        """Symlinks crossed on the way to each library: an image must keep them."""
        return {link for p in self.programs for o in p.objects for link in o.trace.links}

    @property
    def missing(self) -> List[MissingLibrary]:
        return [m for p in self.programs for m in p.missing]

    def _root_paths(self) -> Set[str]:
        return {p.root.path for p in self.programs if p.root}

    def raise_for_missing(self) -> None:
        missing = self.missing
        if missing:
            lines = [m.message() for m in missing[:10]]
            more = f"\n(and {len(missing) - 10} more)" if len(missing) > 10 else ""
            searched = missing[0].searched
            raise UserError(
                "\n".join(lines) + more, hint=f"searched {', '.join(searched)}" if searched else ""
            )


def default_library_dirs(arch: Arch) -> List[str]:
    """The loader's built-in directories (Debian's glibc: multiarch first, no lib64)."""
    return [f"/lib/{arch.triplet}", f"/usr/lib/{arch.triplet}", "/lib", "/usr/lib"]


def ld_so_conf_dirs(sysroot: Sysroot, conf: str = "/etc/ld.so.conf") -> List[str]:
    """Directories listed in the sysroot's ld.so.conf, following `include` globs, in order."""
    dirs: List[str] = []
    seen: Set[str] = set()

    def parse(path: str) -> None:
        real = sysroot.resolve(path)
        data = sysroot.read(path)
        if real is None or data is None or real in seen:
            return
        seen.add(real)
        for line in data.decode("utf-8", "replace").splitlines():
            line = line.split("#", 1)[0].strip()
            words = line.split()
            word = words[0] if words else ""
            if word == "include":
                for pattern in words[1:]:
                    pattern = posixpath.join(posixpath.dirname(path), pattern)
                    for match in sysroot.glob(pattern):
                        parse(match)
            elif line and word != "hwcap":
                for item in re.split(r"[\s:,]+", line):
                    item = item.split("=", 1)[0].rstrip("/")  # "DIR=libc5" type suffixes
                    if item.startswith("/") and item not in dirs:
                        dirs.append(item)

    parse(conf)
    return dirs


def wrong_arch_message(path: str, info: ElfInfo, arch: Arch) -> str:
    return f"{path} is an ELF for {info.target_label()}, the board is {arch.debian}"


class LibraryResolver:
    """Shared state for many programs in one sysroot: caches of parsed files and search dirs."""

    def __init__(self, sysroot: Sysroot, arch: Arch) -> None:
        self.sysroot = sysroot
        self.arch = arch
        self.system_dirs = _dedup(ld_so_conf_dirs(sysroot) + default_library_dirs(arch))
        self._infos: Dict[str, Optional[ElfInfo]] = {}

    def info(self, trace: Trace) -> Optional[ElfInfo]:
        """Parsed ELF at a real path (cached); None if the file is not ELF."""
        real = trace.real_path
        if real not in self._infos:
            with self.sysroot.open(real) as stream:
                if stream.read(4) != b"\x7fELF":
                    self._infos[real] = None
                else:
                    stream.seek(0)
                    self._infos[real] = identify(stream, trace.path)
        return self._infos[real]

    def program(self, path: str) -> ProgramClosure:
        trace = self.sysroot.trace(path)
        if trace is None or trace.kind != "file":
            raise UserError(f"{path} not found in {self.sysroot.label}")
        info = self.info(trace)
        if info is None:
            return ProgramClosure(path, None)
        if not runs_on(info, self.arch):
            raise UserError(wrong_arch_message(path, info, self.arch))
        root = LoadedObject(path, path, trace, info)
        result = ProgramClosure(path, info, root=root)
        by_name: Dict[str, Optional[LoadedObject]] = {}
        by_real: Dict[str, LoadedObject] = {trace.real_path: root}
        if info.soname:
            by_name[info.soname] = root  # a library asked about is loaded already
        interp = None
        if info.interp:
            interp = self._load_interp(info.interp, root, result)
        elif info.needed and self.arch.ld_so:
            # A library (or plugin) is only ever loaded into a program: the board's loader is
            # already there under its usual name, and a DT_NEEDED on it matches its soname.
            interp = self._implicit_loader(root)
        if interp is not None:
            by_name[interp.path] = interp
            if interp.info.soname:
                by_name[interp.info.soname] = interp
            by_real[interp.real_path] = interp
        queue = deque([root])
        while queue:
            obj = queue.popleft()
            for name in obj.info.needed:
                if name in by_name:
                    continue
                found, searched = self._search(name, obj)
                if found is None:
                    by_name[name] = None  # reported once, like ldd's "not found" line
                    result.missing.append(MissingLibrary(name, obj.chain(), searched))
                    result.ldd_lines.append((name, None))
                    continue
                same = by_real.get(found.real_path)  # ld.so compares files, not names
                if same is not None:
                    by_name[name] = same
                    continue
                by_name[name] = by_real[found.real_path] = found
                if found.info.soname:
                    by_name.setdefault(found.info.soname, found)
                result.objects.append(found)
                result.ldd_lines.append((name, found.path))
                queue.append(found)
        if interp is not None:
            result.objects.append(interp)
            result.ldd_lines.append((interp.path, interp.path))
        return result

    def _load_interp(
        self, interp: str, root: LoadedObject, result: ProgramClosure
    ) -> Optional[LoadedObject]:
        trace = self.sysroot.trace(interp)
        info = self.info(trace) if trace is not None and trace.kind == "file" else None
        if info is None:
            result.missing.append(MissingLibrary(interp, (root.path,), is_interp=True))
            return None
        if not runs_on(info, self.arch):
            raise UserError(
                wrong_arch_message(interp, info, self.arch)
                + f" (the dynamic loader of {root.path})"
            )
        return LoadedObject(interp, interp, trace, info, loader=root)

    def _implicit_loader(self, root: LoadedObject) -> Optional[LoadedObject]:
        path = self.arch.ld_so[0]
        trace = self.sysroot.trace(path)
        if trace is None or trace.kind != "file":
            return None  # then it is searched for like any library
        info = self.info(trace)
        if info is None or not runs_on(info, self.arch):
            return None
        return LoadedObject(path, path, trace, info, loader=root)

    def _search(
        self, name: str, requester: LoadedObject
    ) -> Tuple[Optional[LoadedObject], Tuple[str, ...]]:
        if "/" in name:  # a path: opened as is (relative ones from the root: best effort)
            return self._candidate(
                name if name.startswith("/") else "/" + name, name, requester
            ), ()
        dirs: List[str] = []
        if not requester.info.runpath:
            obj: Optional[LoadedObject] = requester
            while obj is not None:
                dirs += self._expand(obj.info.rpath, obj)
                obj = obj.loader
        dirs += self._expand(requester.info.runpath, requester)
        if not requester.info.nodeflib:
            dirs += self.system_dirs
        dirs = _dedup(dirs)
        for directory in dirs:
            found = self._candidate(directory.rstrip("/") + "/" + name, name, requester)
            if found is not None:
                return found, tuple(dirs)
        return None, tuple(dirs)

    def _candidate(self, path: str, name: str, requester: LoadedObject) -> Optional[LoadedObject]:
        trace = self.sysroot.trace(path)
        if trace is None or trace.kind != "file":
            return None
        info = self.info(trace)
        if info is None or not runs_on(info, self.arch):
            return None  # ld.so skips files it cannot load and searches on
        return LoadedObject(name, path, trace, info, loader=requester)

    def _expand(self, entries: Iterable[str], obj: LoadedObject) -> List[str]:
        """Substitute $ORIGIN, $LIB and $PLATFORM; drop relative entries (cwd-dependent)."""
        # A program's $ORIGIN is its real directory (/proc/self/exe); a library's is the
        # directory it was found in, unresolved.
        origin = posixpath.dirname(obj.real_path if obj.loader is None else obj.path)
        values = {
            "ORIGIN": origin,
            "LIB": f"lib/{self.arch.triplet}",
            "PLATFORM": _platform(self.arch),
        }
        out = []
        for entry in entries:
            expanded = re.sub(
                r"\$(\{(\w+)\}|(\w+))",
                lambda m: values.get(m.group(2) or m.group(3), m.group(0)),
                entry,
            )
            if expanded.startswith("/") and "$" not in expanded:
                out.append(expanded)
        return out


def _platform(arch: Arch) -> str:
    # AT_PLATFORM: the kernel reports "v7l" for ARMv7 (uname "armv7l"); best effort elsewhere.
    name = arch.uname[0]
    return name[3:] if arch.elf_machine == EM_ARM and name.startswith("arm") else name


def _dedup(items: Iterable[str]) -> List[str]:
    seen: Set[str] = set()
    return [i for i in items if not (i in seen or seen.add(i))]


def elf_closure(sysroot: Sysroot, paths: Iterable[str], arch: Arch) -> Closure:
    """Closure of each program in `paths` (paths inside the sysroot).

    A program for another architecture, or a malformed ELF, is a UserError; missing libraries
    are listed in `Closure.missing` (call `raise_for_missing()` to make them an error).
    """
    resolver = LibraryResolver(sysroot, arch)
    return Closure([resolver.program(path) for path in paths])


def check_tree_arch(tree: RootfsTree, arch: Arch) -> None:
    """Refuse any ELF in the tree that the board cannot run, naming the file and both arches."""
    problems = []
    for path, entry in tree:
        if entry.type != FILE or not is_elf(entry.data[:4]):  # hardlinks: checked at target
            continue
        if path.startswith(NOT_FOR_THE_CPU):
            continue
        info = identify(entry.data, path, dynamic=False)
        if not runs_on(info, arch):
            problems.append(wrong_arch_message(path, info, arch))
    if problems:
        more = f"\n(and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise UserError(
            "\n".join(problems[:5]) + more,
            hint="remove the file, or take it from a package for the board's architecture",
        )
