"""Command line: the parser, and one place that turns a user's mistake into one line and exit 2.

Each command group is a module beside this one (parse, call one pipeline function, print).
They import the pipeline inside their commands, not at the top: every `lxembed` run builds the
whole parser, and loading the pipeline for it cost 0.3 s before any work began.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import List, Optional

from .. import log
from ..errors import UserError
from . import build, cache, containers, elf, kernel, net, product, qemu, size

# One module per command group; each adds its subcommands through register(subparsers).
COMMAND_GROUPS = (build, product, elf, qemu, kernel, containers, net, size, cache)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lxembed", description="Minimal busybox images and "
                                     "containers for embedded boards, from Debian packages.")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (for bug reports)")
    parser.add_argument("-C", dest="directory", metavar="DIR",
                        help="run as if started in DIR (as git -C and make -C): its boards/, "
                        "recipes/, overlays/ or lxembed.toml are found first, and relative "
                        "paths are relative to it")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    log.set_quiet(args.quiet or getattr(args, "json", False))
    try:
        if args.directory:
            _change_directory(args.directory)
        return args.func(args)
    except UserError as err:
        if args.debug:
            traceback.print_exc()
        print(f"lxembed: error: {err}", file=sys.stderr)
        if err.hint:
            print(f"lxembed: hint: {err.hint}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `lxembed list | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except OSError as err:
        # The environment said no (disk full, permission, a path that is a file): name the
        # file and the reason. Errors without a file name keep their traceback: they are bugs.
        if args.debug or err.filename is None:
            raise
        print(f"lxembed: error: {err.filename}: {err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lxembed: interrupted", file=sys.stderr)
        return 130


def _change_directory(path: str) -> None:
    try:
        os.chdir(path)
    except OSError as err:
        raise UserError(f"-C {path}: {err.strerror}") from None


if __name__ == "__main__":
    sys.exit(main())
