"""Runners: start built images and containers (qemu-system, qemu-user, LXC, crun)."""
