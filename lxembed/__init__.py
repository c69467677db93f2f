"""lxembed: minimal busybox root filesystems and containers for embedded boards."""

__version__ = "0.1.0"
