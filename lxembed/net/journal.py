"""The write-ahead journal of `net up`, and the lock that lets one `up` or `down` run at a time.

Every change `up` makes is announced here *before* it is made: "about to create link vh-a (a
veth, MAC ...)", "about to set ip_forward (it was 0)". Killed at any point (kill -9, OOM, power
cut), the journal names everything the run may have made; the next `up` takes those objects
over as its own (and finishes the run) and `down` removes what exists of them. An announced
object that does not exist was never made and is skipped.

File format: `STATE/net/NAME.journal`, one JSON object per line, appended and fdatasync'd per
record. Append-only rather than rewriting a whole file (temp, fsync, rename, fsync the
directory) per change: one small write and one flush each (~0.15 ms on ext4 here, where the
rewrite costs two flushes and grows with the run), and a power cut can only tear the *last*
line, which is then ignored: it was never flushed, so the change it announced was never begun.
A run's first record is its header ({"run": "up", "pid", "file", "started"}); the others are
journal entries in the state file's format (kind, name, ...). The file is deleted once its
entries are in the state file (`up` succeeded) or undone (`up` failed, `down`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from .. import log
from .state import fsync_dir, journal_file, lock_file


def read_records(path: Path) -> List[Dict[str, Any]]:
    """Every complete record; a torn last line (a write cut by a power loss) is left out."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in data.split(b"\n")[:-1]:  # after the last newline: torn or empty
        try:
            record = json.loads(line)
        except ValueError:
            continue  # only a torn write makes one, and nothing acted on it
        if isinstance(record, dict):
            records.append(record)
    return records


def entries_of(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [r for r in records if "kind" in r and "name" in r]


class Journal:
    """What this run (and any interrupted run it took over) made or may have made, in order.

    `entries` are undone in reverse: the recovered ones first found, then this run's, each
    written to the file before its change is made. Entries: netns NAME; link NAME (netns, type,
    mac); address LINK (netns, address); master LINK (previous); up LINK (netns; was down);
    moved LINK (netns); sysctl PATH (previous); tables (tables: those that did not exist; the
    record also means "the rules are about to be replaced"); dnsmasq BRIDGE (pidfile).
    """

    def __init__(self, path: Optional[Path], header: Optional[Dict[str, Any]] = None,
                 recovered: List[Dict[str, Any]] = ()):
        self.path = path  # None: in memory only
        self.header = header or {}
        self.recovered = list(recovered)
        self.entries: List[Dict[str, Any]] = list(recovered)
        self.made: List[Dict[str, Any]] = []  # this run's changes that completed
        self._fd: Optional[int] = None

    @contextlib.contextmanager
    def change(self, kind: str, name: str, **extra: Any) -> Iterator[Dict[str, Any]]:
        """Announce a change durably, let the caller make it, then count it as made.

        A change that raises an error was refused (netlink, nft and a sysctl write are
        all-or-nothing): it leaves the in-memory list, so a rollback never undoes an object
        that was there before. Its record stays in the file, where a later run checks it."""
        entry = {"kind": kind, "name": name, **extra}
        self._write(entry)
        self.entries.append(entry)
        try:
            yield entry
        except Exception:
            # by identity: an equal entry recovered from an earlier run stays
            self.entries = [e for e in self.entries if e is not entry]
            raise
        self.made.append(entry)

    def _write(self, record: Dict[str, Any]) -> None:
        if self.path is None:
            return
        if self._fd is None:
            new = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o644)
            if new:
                fsync_dir(self.path.parent)
            self._append({**self.header, "started": round(time.time(), 3)})
        self._append(record)

    def _append(self, record: Dict[str, Any]) -> None:
        os.write(self._fd, (json.dumps(record, sort_keys=True) + "\n").encode())
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        """The entries are committed (state file) or undone: the journal has no more to say.
        (A power cut that undoes the unlink brings back entries the state file already has:
        taken over again, they are the same objects.)"""
        self.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def unique(entries: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Entries without repeats, first occurrence kept (its `previous` is the original one)."""
    seen, out = set(), []
    for e in entries:
        key = json.dumps(e, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _holder(path: Path) -> str:
    try:
        pid, op = path.read_text().split()[:2]
        return f"`net {op}` (pid {pid})"
    except (OSError, ValueError):
        return "another `net up` or `net down`"


@contextlib.contextmanager
def net_lock(name: str, op: str) -> Iterator[None]:
    """One `up` or `down` of a description at a time; a second one waits, saying for whom.

    flock(2): the kernel drops it when its holder exits, however (kill -9 included), so a dead
    holder never blocks the next run. Unlike paths.file_lock the file is not truncated on open:
    it names the holder for whoever waits. The descriptor is close-on-exec, so dnsmasq (which
    outlives `up`) never inherits the lock."""
    path = lock_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(f"network {name}: waiting for {_holder(path)} to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {op}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def lock_holder(name: str) -> Optional[str]:
    """Who holds the description's lock now ("`net up` (pid N)"), or None."""
    path = lock_file(name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _holder(path)
    finally:
        os.close(fd)


def interrupted(name: str) -> Optional[Dict[str, Any]]:
    """The recorded run(s) of NAME that did not finish: {op, pid, started, changes, last,
    running}, or None. `running` names the holder when the run is in fact still going."""
    records = read_records(journal_file(name))
    if not records:
        return None
    heads = [r for r in records if "run" in r]
    entries = entries_of(records)
    head = heads[-1] if heads else {}  # the latest run cut short
    last = entries[-1] if entries else None
    return {"op": head.get("run", "up"), "pid": head.get("pid"), "started": head.get("started"),
            "runs": len(heads), "changes": len(entries),
            "last": f"{last['kind']} {last['name']}" if last else None,
            "running": lock_holder(name)}
