"""Image writers: serialise a RootfsTree (dir, tar, cpio newc; .zst/.gz) plus manifest.json."""

from . import containers  # noqa: F401  registers the lxc and oci formats
from .output import Artifact, write_formats

__all__ = ["Artifact", "write_formats"]
