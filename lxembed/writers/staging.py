"""A build's whole output is staged beside the output directory and swapped in at the end.

Every format, the manifests and the modules segment are written into a fresh directory next to
OUTPUT; only when all of them are written is it exchanged with OUTPUT (renameat2 RENAME_EXCHANGE,
one atomic step on Linux), so OUTPUT is always one whole build: the new one, or the previous one
byte for byte. What can be checked about OUTPUT is checked before anything is built.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UserError

STAMP = ".lxembed-build.json"  # written into every output: what it was built from
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class OutputStage:
    """`with OutputStage(out) as stage:` write into `stage.path`; on success it becomes OUTPUT."""

    def __init__(self, output: Path):
        self.output = Path(os.path.abspath(output))
        check_output(self.output)
        try:
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.output.name}.new-",
                                              dir=self.output.parent))
        except OSError as err:
            raise UserError(f"{self.output.parent}: cannot write the output here: "
                            f"{err.strerror}") from None

    def __enter__(self) -> OutputStage:
        return self

    def __exit__(self, kind, value, tb) -> bool:
        if kind is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            if isinstance(value, OSError) and value.errno in _ENVIRONMENT_ERRNOS:
                raise UserError(f"{self.output}: {value.strerror} while writing the output; "
                                "the previous output is unchanged") from None
            return False
        os.chmod(self.path, 0o755)
        _swap_in(self.path, self.output)
        return False


# The disk or the directory refused: the user's environment, not a bug.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                       errno.EFBIG}


def check_output(output: Path) -> None:
    """Refuse an OUTPUT that cannot become a build's directory, before anything is built."""
    for parent in reversed(output.parents):
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{output}: {parent} is not a directory")
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise UserError(f"{output}: exists and is not a directory",
                        hint="--output names the directory a build fills; choose another path")
    if output.is_dir() and any(output.iterdir()) and not (output / STAMP).exists():
        raise UserError(f"{output}: a directory lxembed did not write (no {STAMP}); a build "
                        "replaces its output as a whole", hint="choose a new or empty directory")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{output.parent}: {err.strerror}") from None
    if not os.access(output.parent, os.W_OK | os.X_OK):
        raise UserError(f"{output.parent}: not writable")


def _swap_in(new: Path, output: Path) -> None:
    if not output.exists():
        os.rename(new, output)
        return
    if _rename_exchange(new, output):
        shutil.rmtree(new, ignore_errors=True)  # now holds the previous build
        return
    # No renameat2 (old kernel, some filesystems): two renames, a moment with no OUTPUT.
    old = output.with_name(f".{output.name}.old-{os.getpid()}")
    os.rename(output, old)
    os.rename(new, output)
    shutil.rmtree(old, ignore_errors=True)


def _rename_exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0
