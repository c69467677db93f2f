"""Files a board needs outside its root filesystem (boot firmware), from one Debian package."""

from __future__ import annotations

from typing import Dict, Optional

from ..config import Board
from ..errors import UserError
from .apt import PackageSource
from .deb import open_data_tar


def package_files(board: Board, package: str, directory: str,
                  mirror: Optional[str] = None) -> Dict[str, bytes]:
    """The regular files under `directory` in `package` (the board's suite, arch and archive
    components), by their path below it. Only that package is downloaded, not its closure."""
    source = PackageSource(board.suite, board.arch.debian, mirror, board.settings["components"])
    deb = next((d for d in source.resolve([package]) if d.name == package), None)
    if deb is None:
        raise UserError(f"{board.name}: {package} is not in {board.suite}/{board.arch.debian}")
    source.download(deb)
    prefix = directory.strip("/") + "/"
    files: Dict[str, bytes] = {}
    with open_data_tar(deb.path) as tar:
        for member in tar:
            name = member.name.lstrip("./")
            if member.isreg() and name.startswith(prefix) and ".." not in name.split("/"):
                with tar.extractfile(member) as fh:
                    files[name[len(prefix):]] = fh.read()
    if not files:
        raise UserError(f"{board.name}: {package} has no files under {directory}")
    return files
