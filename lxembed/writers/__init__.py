"""Image writers: serialise a RootfsTree (dir, tar, cpio newc; .zst/.gz) plus manifest.json."""

from .output import Artifact, write_formats

__all__ = ["Artifact", "write_formats"]
