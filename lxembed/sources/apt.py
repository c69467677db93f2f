"""Debian packages through apt with a private state per (suite, arch).

The host's dpkg is never touched: apt gets its own lists, cache and an empty status file, so
it resolves the dependency closure of the requested packages for any architecture and
verifies the archive signatures as usual. A resolution is remembered next to the lists, so a
warm cache builds without running apt and without the network. It carries each file's SHA256
from the index: a cached .deb that no longer matches (cut, changed) is downloaded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import UserError
from ..log import progress, warn
from ..paths import cache_dir, file_lock
from ..paths import file_sha256 as _file_sha256  # a test counts its calls
from .mirror import DEBIAN_KEYRING, find_mirrors

_INST = re.compile(r"^Inst (\S+) (?:\[\S+\] )?\((\S+) .*\[(\S+)\]\)")
_URI = re.compile(r"^'[^']+' (\S+) (\d+) (\S+)")  # apt-get --print-uris: URI file size hash
_MEMO_FORMAT = "2"  # resolutions carry each file's size and hash


@dataclass(frozen=True)
class Deb:
    name: str
    version: str
    arch: str
    path: Path
    sha256: str = ""  # as the archive's index gives it ("" if the index gives none)
    size: int = -1


class UnknownPackage(UserError):
    """A package the suite does not have for the architecture (the build names the recipe
    line that asks for it)."""

    def __init__(self, package: str, suite: str, arch: str) -> None:
        super().__init__(f"unknown package {package!r} in Debian {suite} for {arch}")
        self.package = package


class PackageSource:
    """The Debian archive of one suite, for one architecture."""

    def __init__(self, suite: str, arch: str, mirror: Optional[str] = None,
                 components: Sequence[str] = ("main",)):
        self.suite, self.arch = suite, arch
        self.mirror_override = mirror
        self.components = tuple(components)
        self.root = cache_dir() / "apt" / f"{suite}-{arch}"
        self.lists = self.root / "lists"
        self.archives = self.root / "cache" / "archives"
        for d in (self.lists / "partial", self.archives / "partial"):
            d.mkdir(parents=True, exist_ok=True)
        self.status = self.root / "status"
        self.status.touch()
        self._verified: Optional[VerifiedFiles] = None

    # -- apt plumbing ------------------------------------------------------------------------
    def _write_sources_list(self) -> Path:
        mirrors = find_mirrors(self.suite, self.mirror_override)
        keyring = f" [signed-by={DEBIAN_KEYRING}]" if os.path.exists(DEBIAN_KEYRING) else ""
        comps = " ".join(self.components)
        lines = [f"deb{keyring} {mirrors.main} {self.suite} {comps}",
                 f"deb{keyring} {mirrors.main} {self.suite}-updates {comps}"]
        if mirrors.security:
            lines.append(f"deb{keyring} {mirrors.security} {self.suite}-security {comps}")
        path = self.root / "sources.list"
        text = "\n".join(lines) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        return path

    def _apt(self, *args: str, title: str = "", cwd: Optional[Path] = None
             ) -> subprocess.CompletedProcess:
        opts = [
            f"-oAPT::Architecture={self.arch}", f"-oAPT::Architectures={self.arch}",
            f"-oDir::State={self.root}", f"-oDir::State::Lists={self.lists}",
            f"-oDir::State::Status={self.status}", f"-oDir::Cache={self.root / 'cache'}",
            f"-oDir::Etc::SourceList={self.root / 'sources.list'}",
            "-oDir::Etc::SourceParts=/dev/null", "-oDir::Etc::Preferences=/dev/null",
            "-oDir::Etc::PreferencesParts=/dev/null", "-oAPT::Install-Recommends=false",
            "-oAPT::Install-Suggests=false", "-oAcquire::Languages=none",
            # apt as root drops to _apt for downloads, which cannot write in our cache dir.
            "-oAPT::Sandbox::User=root", "-oDebug::NoLocking=1", "-oAPT::Get::List-Cleanup=false",
            "-opkgCacheGen::Essential=none", "-q",
        ]
        # A fleet of CI runners shares one apt-cacher-ng: each package is downloaded once.
        proxy = os.environ.get("LXEMBED_APT_PROXY")
        if proxy:
            opts.append(f"-oAcquire::http::Proxy={proxy}")
        env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
        if shutil.which("apt-get") is None:
            raise UserError("apt-get: not found on PATH; lxembed fetches Debian packages with it",
                            hint="install apt (on Debian and Ubuntu: apt-get install apt)")
        if not title:
            return subprocess.run(["apt-get", *opts, *args], capture_output=True, text=True,
                                  env=env, cwd=cwd)
        # apt's machine-readable status ("dlstatus:N:PERCENT:...") on a pipe drives the bar.
        read_fd, write_fd = os.pipe()
        proc = subprocess.Popen(["apt-get", f"-oAPT::Status-Fd={write_fd}", *opts, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, pass_fds=(write_fd,), cwd=cwd)
        os.close(write_fd)
        with progress(title, 100) as advance, os.fdopen(read_fd) as status:
            done = 0.0
            for line in status:
                parts = line.split(":")
                if parts[0] == "dlstatus" and len(parts) > 2:
                    percent = float(parts[2])
                    advance(percent - done)
                    done = percent
        out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def _locked(self):
        return file_lock(self.root / "lock")

    def _index(self, component: str = "main") -> List[Path]:
        return sorted(self.lists.glob(
            f"*_dists_{self.suite}_{component}_binary-{self.arch}_Packages*"))

    def _main_index(self) -> List[Path]:
        return self._index("main")

    def update(self, force: bool = False) -> None:
        """Fetch the package indexes unless they are already here (or `force`).

        Every component shares one lists directory per (suite, arch); a source that asks for
        another component (non-free-firmware) fetches the indexes once more.
        """
        if all(self._index(c) for c in self.components) and not force:
            return
        self._write_sources_list()
        result = self._apt("update", title=f"apt update {self.suite}/{self.arch}")
        problems = [ln for ln in (result.stdout + result.stderr).splitlines()
                    if ln.startswith(("E:", "W:", "Err:"))]
        if not self._main_index():
            detail = " / ".join(problems[:3]) or result.stderr.strip()
            raise UserError(f"cannot fetch the {self.suite}/{self.arch} package index from the "
                            "Debian mirror",
                            hint=f"check the network or give another mirror with --mirror "
                            f"(apt says: {detail})")
        for line in problems:
            if "Failed to fetch" in line or line.startswith("Err:"):
                # A secondary index (security, updates) may be absent for this arch.
                warn(f"apt ({self.suite}/{self.arch}): {line}")

    def _index_stamp(self) -> str:
        h = hashlib.sha256()
        for p in sorted(self.lists.glob("*_Packages*")):
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
        return h.hexdigest()[:16]

    # -- resolution and download -------------------------------------------------------------
    def resolve(self, packages: Sequence[str]) -> List[Deb]:
        """The dependency closure of `packages`, as apt resolves it on an empty system, each
        with the size and hash the archive's index gives for its file."""
        wanted = sorted(set(packages))
        self.update()
        key = hashlib.sha256(("\n".join(wanted) + self._index_stamp() + _MEMO_FORMAT
                              + " ".join(self.components)).encode())
        memo = self.root / "resolved" / f"{key.hexdigest()[:24]}.json"
        try:
            return [Deb(n, v, a, self.archives / f, h, z)
                    for n, v, a, f, h, z in json.loads(memo.read_text())]
        except (OSError, ValueError, TypeError):
            pass  # not resolved yet with this index (or an older memo format)
        self._write_sources_list()
        result = self._apt("install", "-s", "-y", *wanted)
        if result.returncode != 0:
            raise self._explain(result.stdout + result.stderr, wanted)
        found = []
        for line in result.stdout.splitlines():
            m = _INST.match(line)
            if m:
                found.append((m.group(1), m.group(2), m.group(3)))
        debs = self._with_index_hashes(found)
        memo.parent.mkdir(exist_ok=True)
        tmp = memo.with_suffix(".tmp")
        tmp.write_text(json.dumps([[d.name, d.version, d.arch, d.path.name, d.sha256, d.size]
                                   for d in debs]))
        os.replace(tmp, memo)
        return debs

    def _with_index_hashes(self, found: Sequence[tuple]) -> List[Deb]:
        """Debs for (name, version, arch), with the file name, size and hash from the index
        (`apt-get download --print-uris` reads them from the index, downloads nothing)."""
        if not found:
            return []
        result = self._apt("download", "--print-uris", *(f"{n}={v}" for n, v, _ in found))
        index = {}
        for line in result.stdout.splitlines():
            m = _URI.match(line)
            if m:
                algo, _, value = m.group(3).partition(":")
                index[m.group(1)] = (value.lower() if algo == "SHA256" else "", int(m.group(2)))
        debs = []
        for name, version, arch in found:
            fname = f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
            sha256, size = index.get(fname, ("", -1))
            debs.append(Deb(name, version, arch, self.archives / fname, sha256, size))
        unchecked = [d.path.name for d in debs if not d.sha256]
        if unchecked:
            warn(f"apt ({self.suite}/{self.arch}) gives no SHA256 for {', '.join(unchecked)}: "
                 "the cached files are checked by size only")
        return debs

    def _explain(self, output: str, wanted: Sequence[str]) -> UserError:
        for pattern in (r"Unable to locate package (\S+)",
                        r"Package '?(\S+?)'? has no installation"):
            m = re.search(pattern, output)
            if m:
                return UnknownPackage(m.group(1), self.suite, self.arch)
        errors = [ln.strip() for ln in output.splitlines()
                  if ln.startswith("E:") or "Depends:" in ln]
        return UserError(f"apt cannot resolve {', '.join(wanted)} for {self.suite}/{self.arch} "
                         f"({' / '.join(errors[:4])})")

    def fetch(self, packages: Sequence[str]) -> List[Deb]:
        """Resolve and download the closure of `packages`: each .deb matches the index."""
        with self._locked():
            debs = self.resolve(packages)
            damaged = self._drop_damaged(debs)
            missing = [d for d in debs if not d.path.exists()]
            if missing:
                self._write_sources_list()
                names = [f"{d.name}={d.version}" for d in missing]
                result = self._apt("install", "--download-only", "-y", *names,
                                   title=f"download {len(names)} packages ({self.arch})")
                self._check_downloaded(missing, damaged, result)
            self._cache_hashes.save()
            return debs

    def download(self, deb: Deb) -> Deb:
        """Download exactly this package, without its dependencies, unless the cache holds
        it intact (apt verifies what it downloads)."""
        with self._locked():
            damaged = self._drop_damaged([deb])
            if not deb.path.exists():
                self._write_sources_list()
                # `apt-get download` writes into the working directory: the archive cache.
                result = self._apt("download", f"{deb.name}={deb.version}", cwd=self.archives,
                                   title=f"download {deb.name}")
                self._check_downloaded([deb], damaged, result)
            self._cache_hashes.save()
        return deb

    # -- the download cache repairs itself ---------------------------------------------------
    @property
    def _cache_hashes(self) -> VerifiedFiles:
        if self._verified is None:
            self._verified = VerifiedFiles(self.root / "verified.json", self.archives)
        return self._verified

    def _drop_damaged(self, debs: Sequence[Deb]) -> List[Deb]:
        """Remove cached .debs that do not match the index (cut, changed): apt fetches them
        again like missing ones. Returns them."""
        damaged = []
        for deb in debs:
            if deb.path.exists() and not self._cache_hashes.matches(deb.path, deb.sha256,
                                                                    deb.size):
                deb.path.unlink()
                damaged.append(deb)
        return damaged

    def _check_downloaded(self, wanted: Sequence[Deb], damaged: Sequence[Deb],
                          result: subprocess.CompletedProcess) -> None:
        still = [d for d in wanted if not d.path.exists()]
        if result.returncode == 0 and not still:
            for deb in wanted:  # hashed once now, so the next build need not
                self._cache_hashes.matches(deb.path, deb.sha256, deb.size)
            for deb in damaged:
                warn(f"{deb.path.name} was damaged in the download cache (it did not match the "
                     "archive's index): downloaded again")
            return
        fails = [ln for ln in (result.stdout + result.stderr).splitlines()
                 if ln.startswith(("E:", "Err:"))] or [result.stderr.strip()]
        why = "apt says: " + " / ".join(fails[:3])
        broken = [d for d in damaged if d in still]
        if broken:
            raise UserError(f"{broken[0].path}: damaged in the download cache (it does not match "
                            f"the archive's index) and cannot be downloaded again",
                            hint=f"it was removed; a build with network access downloads it "
                            f"({why})")
        what = ", ".join(f"{d.name} {d.version}" for d in still or wanted)
        raise UserError(f"cannot download {what} ({self.suite}/{self.arch}) and it is not in "
                        "the cache", hint=f"this needs the network once; later builds use the "
                        f"cache ({why})")


class VerifiedFiles:
    """Which cached files were found to match their index hash, by (size, mtime, ctime, inode):
    an unchanged file is not hashed again on every build; any write to it changes the stamp."""

    def __init__(self, path: Path, directory: Path):
        self.path, self.directory = path, directory  # the record, and where the files are
        self.known = self._load()
        self.added: Dict[str, list] = {}

    def _load(self) -> Dict[str, list]:
        try:
            known = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return known if isinstance(known, dict) else {}

    def matches(self, path: Path, sha256: str, size: int) -> bool:
        """Does the file at `path` (in the directory) have this size and SHA256?"""
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        if size >= 0 and st.st_size != size:
            return False
        if not sha256:  # an index without SHA256: the size is all there is to check
            return True
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, sha256]
        if self.known.get(path.name) == stamp:
            return True
        if _file_sha256(path) != sha256:
            return False
        self.known[path.name] = self.added[path.name] = stamp
        return True

    def save(self) -> None:
        """Add what was verified to the record (callers hold the cache's lock)."""
        if not self.added:
            return
        known = {**self._load(), **self.added}  # another source object may have saved too
        known = {n: s for n, s in known.items() if (self.directory / n).exists()}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=0, sort_keys=True))
        os.replace(tmp, self.path)
        self.added = {}


# -- lxembed cache: what the download caches hold --------------------------------------------------
def download_caches() -> List[Dict[str, object]]:
    """Each (suite, arch) download cache: its directory, how many .debs, how many bytes."""
    found = []
    for archives in sorted((cache_dir() / "apt").glob("*/cache/archives")):
        sizes = [p.stat().st_size for p in archives.glob("*.deb")]
        found.append({"path": str(archives), "debs": len(sizes), "bytes": sum(sizes)})
    return found


def clean_download_caches() -> Tuple[int, int]:
    """Remove every downloaded .deb (indexes and resolutions stay: a later build downloads
    what it needs again), each cache under its lock; returns (files, bytes) removed."""
    files = size = 0
    for archives in sorted((cache_dir() / "apt").glob("*/cache/archives")):
        root = archives.parents[1]
        with file_lock(root / "lock"):
            for deb in archives.glob("*.deb"):
                size += deb.stat().st_size
                deb.unlink()
                files += 1
            (root / "verified.json").unlink(missing_ok=True)
    return files, size
