"""Package sources: the Debian archive through apt, with a private state per (suite, arch)."""
