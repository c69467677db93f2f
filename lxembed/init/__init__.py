"""The lxembed PID 1 (lxinit.py): a stdlib-only file copied into images, never imported there."""
