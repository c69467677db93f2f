"""Rootfs assembly: packages, skeleton, busybox applets, init, overlays -> RootfsTree."""
