"""Service containers of a device: containers resolved against the DEVICE's own tree.

A device recipe lists `[[service_containers]]`, each naming a container recipe. A bind-host one
is resolved against the device image being built (its /usr, and /bin, /lib, /sbin where the
device has real directories), never against the build host; a self-contained one brings its own
tree. Each lands where LXC looks by default:
/var/lib/lxc/NAME/config and /var/lib/lxc/NAME/rootfs. A generated script, run by the device's
init as a service, starts them in the declared order — each once the previous one is ready —
and stops them in reverse order before the device goes down.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path
from typing import List

from ..config import Plan, load_recipe
from ..config.loader import SERVICE_CONTAINERS_SCRIPT as MANAGER
from ..rootfs.python_init import IMAGE_CODE, shim
from ..tree import DIR, FILE, HARDLINK, SYMLINK, RootfsTree
from .bundle import hook_scripts
from .lxc_config import lxc_config
from .rootfs import container_tree
from .spec import HOST_PYTHON, LXINIT_CODE, LXINIT_SHIM, ContainerSpec, container_spec

LXC_PATH = "/var/lib/lxc"  # lxc-ls, lxc-info -n NAME and lxc-attach -n NAME need no -P
READY_FILE = "/run/lxembed/ready"  # the Python init's, inside the container


def add_service_containers(tree: RootfsTree, plan: Plan, build_tree) -> List[str]:
    """Resolve, build and add every service container of the device recipe; their names.

    `build_tree(plan)` builds a recipe's own tree (the pipeline's, passed in to keep the
    import direction: the container step sits after tree assembly).
    """
    entries = plan.recipe.settings.get("service_containers") or []
    if not entries:
        return []
    with tempfile.TemporaryDirectory(prefix="lxembed-device-root-") as probe:
        _probe_root(tree, Path(probe))
        specs = []
        for entry in entries:
            recipe = load_recipe(entry["recipe"])
            cplan = Plan(plan.board, recipe, plan.epoch)
            spec = container_spec(cplan, root=Path(probe), root_arch=plan.arch)
            spec.name = entry["name"]
            specs.append((entry, cplan, spec))
    for _, cplan, spec in specs:
        _add_one(tree, plan, cplan, spec, build_tree(cplan))
    tree.write(MANAGER, manager_script(specs).encode(), mode=0o755, mtime=plan.epoch,
               origin="service containers")
    return [spec.name for _, _, spec in specs]


def _probe_root(tree: RootfsTree, root: Path) -> None:
    """The device tree's shape on disk: directories, symlinks, and empty stand-ins for files
    (the probes look at names and links, never at file content)."""
    for path, entry in tree:
        dest = root / path.lstrip("/")
        if path == "/":
            continue
        if entry.type == DIR:
            dest.mkdir(exist_ok=True)
        elif entry.type == SYMLINK:
            os.symlink(entry.target, dest)
        elif entry.type in (FILE, HARDLINK):
            dest.touch()


def _add_one(tree: RootfsTree, plan: Plan, cplan: Plan, spec: ContainerSpec,
             own_tree: RootfsTree) -> None:
    base = f"{LXC_PATH}/{spec.name}"
    ctree = container_tree(own_tree, cplan, spec)
    if spec.mode == "bind-host" and spec.init == "python" and tree.get(IMAGE_CODE) is not None:
        # The device's own init, as bytecode, is in the /usr the container binds: its shim runs
        # that, instead of compiling a copy of the source at every start (~0.5 s under TCG).
        ctree.remove(LXINIT_CODE)
        ctree.write(LXINIT_SHIM, shim(HOST_PYTHON, IMAGE_CODE, "bytecode").encode(), mode=0o755,
                    mtime=plan.epoch, origin="lxembed init")
    for path, entry in ctree:
        if path == "/":
            tree.mkdir(f"{base}/rootfs", mode=entry.mode, mtime=plan.epoch,
                       origin=f"container {spec.name}")
        else:
            tree.add(f"{base}/rootfs{path}", entry)
    text = lxc_config(spec, f"{base}/rootfs", plan.board.name, cplan.recipe.name)
    tree.write(f"{base}/config", text.encode(), mtime=plan.epoch,
               origin=f"container {spec.name}")
    for path, script in hook_scripts(spec).items():  # its port's MAC and rules, by LXC hooks
        tree.write(f"{base}/{path}", script, mode=0o755, mtime=plan.epoch,
                   origin=f"container {spec.name}")


def manager_script(specs) -> str:
    """POSIX sh for the device's busybox: start in order with readiness, stop in reverse."""
    rows = "\n".join(
        f"{shlex.quote(spec.name)} {entry['ready_timeout']:g} {entry['stop_timeout']:g} "
        f"{'file' if spec.init == 'python' else 'running'}"
        for entry, _, spec in specs)
    return _MANAGER.replace("@ROWS@", rows).replace("@READY@", READY_FILE)


# Readiness: a container whose init is lxembed's says so with its ready file, seen from the
# device through /proc/PID/root; any other is ready once LXC reports it RUNNING. A container
# that fails is reported and retried with backoff in the background; the others go on.
_MANAGER = r"""#!/bin/sh
# Generated by lxembed: the device's service containers, in start order
# (name, ready timeout s, stop timeout s, readiness).
ROWS='@ROWS@'
say() { echo "$*"; }  # the init shows it on the console and keeps it in its log

grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts || mount -t cgroup2 cgroup2 /sys/fs/cgroup

start_one() {  # name ready-timeout kind
  # A daemonized lxc-start returns once the container is RUNNING; its init's PID is asked once,
  # then readiness is a file test (each lxc-info run costs ~0.1 s on a small CPU).
  lxc-start -n "$1" 2>/dev/null || return 1
  [ "$3" = file ] || return 0
  pid=$(lxc-info -n "$1" -p -H 2>/dev/null) && [ -n "$pid" ] || return 1
  ticks=0
  while [ "$ticks" -lt "$(( ${2%.*} * 50 ))" ]; do
    [ -e "/proc/$pid/root@READY@" ] && return 0
    [ -d "/proc/$pid" ] || return 1  # its init ended: the container stopped
    sleep 0.02; ticks=$((ticks + 1))
  done
  return 1
}

retry() {  # name ready-timeout kind: backoff 1, 2, 4... 60 s
  delay=1
  while :; do
    lxc-stop -n "$1" -k >/dev/null 2>&1
    sleep "$delay"
    if start_one "$1" "$2" "$3"; then say "$1: ready (after a retry)"; return; fi
    delay=$((delay * 2)); [ "$delay" -gt 60 ] && delay=60
    say "$1: failed to start; retrying in ${delay}s"
  done
}

stop_all() {
  [ -n "$retries" ] && kill $retries 2>/dev/null
  say "stopping containers"
  echo "$ROWS" | sed '1!G;h;$!d' | while read -r name ready stop kind; do
    [ "$(lxc-info -n "$name" -s -H 2>/dev/null)" = STOPPED ] && continue
    if lxc-stop -n "$name" -t "${stop%.*}" 2>/dev/null; then
      say "$name: stopped cleanly"
    else
      lxc-stop -n "$name" -k >/dev/null 2>&1; say "$name: killed after ${stop}s"
    fi
  done
  exit 0
}
trap stop_all TERM INT

failed=0 retries=
while read -r name ready stop kind; do
  if start_one "$name" "$ready" "$kind"; then
    say "$name: ready"
  else
    failed=1; say "$name: failed to start; retrying in 1s"
    retry "$name" "$ready" "$kind" &
    retries="$retries $!"
  fi
done <<EOF
$ROWS
EOF
[ "$failed" = 0 ] && say "all containers ready"
while :; do sleep 3600 & wait $!; done
"""
