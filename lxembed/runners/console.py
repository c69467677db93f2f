"""A serial console driver in the pexpect style, on plain file descriptors and select().

It waits for regular expressions with a timeout, types commands into the guest's shell and reads
back each command's output and exit status through sentinels. Everything the guest prints is
kept, raw, in a log file.
"""

from __future__ import annotations

import codecs
import os
import re
import select
import time
from pathlib import Path
from typing import BinaryIO, Optional, Pattern, Tuple, Union

# Terminal control sequences the guest's line editor prints (ash asks for the cursor position
# with ESC[6n, redraws lines...): dropped before matching, kept in the raw log.
_ESCAPES = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-Za-z]|[=>78DEHMc])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_MAX_BUFFER = 1 << 20


class ConsoleTimeout(Exception):
    """The expected text did not appear in time."""

    def __init__(self, pattern: str, seconds: float):
        super().__init__(f"no {pattern!r} on the console within {seconds:.0f} s")
        self.pattern, self.seconds = pattern, seconds


class ConsoleClosed(Exception):
    """The guest went away (qemu exited) while we waited."""


class SerialConsole:
    """The guest's console through a pair of file descriptors (qemu's stdio)."""

    def __init__(self, read_fd: int, write_fd: int, log: Optional[BinaryIO] = None):
        self.read_fd, self.write_fd, self.log = read_fd, write_fd, log
        self.buffer = ""  # normalised text not consumed by an expect() yet
        self.closed = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""  # the start of an escape sequence split across reads
        self._serial = 0
        os.set_blocking(read_fd, False)

    # -- reading ------------------------------------------------------------------------------
    def _normalise(self, text: str) -> str:
        text = self._pending + text
        self._pending = ""
        cut = text.rfind("\x1b")
        if cut != -1 and len(text) - cut < 32 and not _ESCAPES.match(text, cut):
            text, self._pending = text[:cut], text[cut:]
        text = _ESCAPES.sub("", text.replace("\r\n", "\n").replace("\r", ""))
        return _CONTROL.sub("", text)

    def _fill(self, deadline: float) -> bool:
        """Read what is there (waiting until `deadline`); False at the deadline."""
        if self.closed:
            raise ConsoleClosed("the guest console is closed")
        wait = max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([self.read_fd], [], [], wait)
        if not ready:
            return False
        try:
            data = os.read(self.read_fd, 65536)
        except BlockingIOError:
            return True
        if not data:
            self.closed = True
            raise ConsoleClosed("the guest console closed (qemu exited)")
        if self.log is not None:
            self.log.write(data)
            self.log.flush()
        self.buffer += self._normalise(self._decoder.decode(data))
        if len(self.buffer) > _MAX_BUFFER:  # a chatty guest must not eat the host's memory
            self.buffer = self.buffer[-_MAX_BUFFER // 2 :]
        return True

    def expect(self, pattern: Union[str, Pattern], timeout: float) -> "re.Match":
        """Wait for `pattern`; consume the buffer up to the end of the match."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.buffer)
            if match:
                self.buffer = self.buffer[match.end() :]
                return match
            if time.monotonic() >= deadline or not self._fill(deadline):
                if time.monotonic() >= deadline:
                    raise ConsoleTimeout(regex.pattern, timeout)

    def drain(self, seconds: float = 0.0) -> str:
        """Read for `seconds` (or what is already there) and return it all."""
        deadline = time.monotonic() + seconds
        try:
            while self._fill(deadline) and time.monotonic() < deadline:
                pass
        except ConsoleClosed:
            pass
        out, self.buffer = self.buffer, ""
        return out

    # -- writing ------------------------------------------------------------------------------
    def send(self, text: str) -> None:
        data = text.encode()
        while data:
            try:
                written = os.write(self.write_fd, data)
            except BrokenPipeError:
                self.closed = True
                raise ConsoleClosed("the guest console closed (qemu exited)") from None
            data = data[written:]

    def _next(self) -> int:
        self._serial += 1
        return self._serial

    def sync(self, timeout: float, every: float = 1.0) -> None:
        """Wait until a shell answers on the console.

        The shell starts after the ready marker, and may discard what was typed before it
        started: ask again every `every` seconds until one of the answers comes back.
        """
        deadline = time.monotonic() + timeout
        while True:
            n = self._next()
            # The typed line shows `%s`; only the shell's output has the number in place.
            self.send(f"printf '__LX%s_S\\n' {n}\n")
            try:
                self.expect(r"__LX(\d+)_S\n", min(every, max(0.1, deadline - time.monotonic())))
                return
            except ConsoleTimeout:
                if time.monotonic() >= deadline:
                    raise ConsoleTimeout("a shell prompt", timeout) from None

    def run(self, command: str, timeout: float) -> Tuple[Optional[int], str]:
        """Run `command` in the guest's shell: (exit status, output); status None on timeout.

        The command runs in a subshell with stdin from /dev/null (an `exit` or a read cannot
        take the console shell with it) on a line of its own (a trailing comment cannot
        swallow the sentinel).
        """
        n = self._next()
        self.send(
            f"printf '__LX%s_B\\n' {n}; (\n{command}\n) </dev/null 2>&1; "
            f"printf '\\n__LX%s_E%s__\\n' {n} $?\n"
        )
        try:
            self.expect(rf"__LX{n}_B\n", timeout)
            match = self.expect(rf"(?s)(.*?)\n__LX{n}_E(\d+)__", timeout)
        except ConsoleTimeout:
            # Interrupt the command; the shell comes back for the next one (or sync fails).
            self.send("\x03")
            partial = self.buffer
            try:
                self.sync(min(timeout, 10.0))
            except ConsoleTimeout:
                pass
            return None, partial.strip("\n")
        output = match.group(1)
        return int(match.group(2)), output[:-1] if output.endswith("\n") else output


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a console log, control sequences removed, for error messages."""
    try:
        raw = Path(path).read_bytes()[-64 * 1024 :].decode("utf-8", "replace")
    except OSError:
        return ""
    text = _CONTROL.sub("", _ESCAPES.sub("", raw.replace("\r\n", "\n").replace("\r", "\n")))
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
