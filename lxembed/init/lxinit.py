"""lxembed-init: a small PID 1 for lxembed devices and containers.

Run as ``python3 -I -S lxinit.py [--config PATH]`` (default config /etc/lxembed/init.json, or
$LXINIT_CONFIG). This file is copied alone into images: it uses only the standard library, must
never import lxembed, and must stay Python 3.7 compatible. docs/init.md describes the config JSON
and the signal tables.

Modes: "device" (PID 1 outside a container: mount, modules, hostname, network), "container"
(PID 1 under LXC/OCI: only what the runtime left undone) and "subreaper" (not PID 1, as in the
tests: no system setup, orphans are adopted through PR_SET_CHILD_SUBREAPER, and shutdown exits
instead of calling reboot(2)).
"""

import errno
import os
import sys
import time

# Imports are boot time: on an emulated arm64 `import signal` costs 0.1 s (its enums pull in
# enum, functools, collections) and `import json` 0.17 s more (re). The C modules under them
# do all the init needs; the wrappers are the fallback where the C modules are not importable.
try:
    import _signal as signal
except ImportError:
    import signal
try:
    import _json
except ImportError:
    _json = None
try:
    import ctypes
except ImportError:  # a stripped image: no mounts or reboot(2), but still a working init
    ctypes = None
try:
    import fcntl
except ImportError:
    fcntl = None

DEFAULT_CONFIG = "/etc/lxembed/init.json"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HALT, POWEROFF, REBOOT = "halt", "poweroff", "reboot"
# Signal names by number; of two names the first in sorted order wins (SIGABRT, not SIGIOT), as
# in signal.Signals.
SIGNAL_NAMES = {
    int(getattr(signal, n)): n
    for n in sorted(dir(signal), reverse=True)
    if n.startswith("SIG") and not n.startswith("SIG_")
}

# What a signal to PID 1 means, per runtime. Data, not code: one table is chosen at start.
SIGNAL_TABLES = {
    # lxc-stop sends SIGPWR, lxc-stop -r sends SIGINT. SIGRTMIN+3 stays unblocked: LXC sends it
    # instead of SIGPWR when PID 1 blocks it (systemd's convention). SIGUSR1/2 let busybox
    # halt/poweroff work inside; SIGTERM is not reboot here, as runtimes send it to mean "stop".
    "lxc": {
        signal.SIGPWR: HALT,
        signal.SIGINT: REBOOT,
        signal.SIGUSR1: HALT,
        signal.SIGUSR2: POWEROFF,
    },
    # busybox halt/poweroff/reboot signal PID 1 so; the kernel sends SIGINT on ctrl-alt-del.
    "busybox": {
        signal.SIGUSR1: HALT,
        signal.SIGUSR2: POWEROFF,
        signal.SIGTERM: REBOOT,
        signal.SIGPWR: HALT,
        signal.SIGINT: REBOOT,
    },
    # docker/podman/crun stop send SIGTERM; ctrl-c on an attached terminal sends SIGINT.
    "oci": {signal.SIGTERM: POWEROFF, signal.SIGINT: POWEROFF},
}
# reboot(2) commands (glibc's RB_*).
RB = {HALT: 0xCDEF0123, POWEROFF: 0x4321FEDC, REBOOT: 0x01234567}
RB_DISABLE_CAD = 0  # ctrl-alt-del then sends SIGINT to PID 1 instead of an instant reboot
PR_SET_CHILD_SUBREAPER = 36
NULL_DEV = os.makedev(1, 3)  # /dev/null
# TIOCSCTTY without termios (a cut-down image has none): MIPS numbers its tty ioctls apart.
TIOCSCTTY = 0x5480 if os.uname().machine.startswith("mips") else 0x540E
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
MODULES_FILE = "/etc/modules"  # the build lists the board's driver modules here, in load order
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
# (fstype, target, flags, data, device only): the runtime owns /dev in a container.
MOUNTS = [
    ("proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None, False),
    ("sysfs", "/sys", MS_NOSUID | MS_NODEV | MS_NOEXEC, None, False),
    ("devtmpfs", "/dev", MS_NOSUID, "mode=0755", True),
    ("devpts", "/dev/pts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666", True),
    ("tmpfs", "/dev/shm", MS_NOSUID | MS_NODEV, "mode=1777", True),
    ("tmpfs", "/run", MS_NOSUID | MS_NODEV, "mode=0755", False),
    ("tmpfs", "/tmp", MS_NOSUID | MS_NODEV, "mode=1777", False),
]
RESPAWN = {"delay": 0.1, "max_delay": 10.0, "burst": 5, "interval": 10.0, "throttle": 60.0}
DEFAULTS = {
    "hostname": None,
    "mode": "auto",
    "signals": "auto",
    "modules": [],
    "network": {"interfaces": []},
    "services": [],
    "shutdown_grace": 5.0,
    "log_dir": "/run/lxembed/log",
    "log_max_bytes": 262144,
    "ready_file": "/run/lxembed/ready",
    "switch_root": None,
    "rescue_shell": False,
    "respawn": {},
}
DHCP_SCRIPT = """#!/bin/sh
# Written by lxembed-init for udhcpc: $1 is deconfig, bound, renew, leasefail or nak.
IP="%s"
case "$1" in
# Each ip run costs ~50 ms on an emulated board, so only what is needed: the init has set the
# link up and runs udhcpc once (-q), so deconfig has nothing to undo and bound adds the first
# address; an address already there (a renew) is flushed first.
deconfig) ;;
bound|renew)
    $IP addr add "$ip/${mask:-24}" dev "$interface" 2>/dev/null || {
        $IP -4 addr flush dev "$interface"
        $IP addr add "$ip/${mask:-24}" dev "$interface"
    }
    [ -n "$router" ] && $IP route replace default via "${router%%%% *}" dev "$interface"
    [ -n "$dns" ] && for s in $dns; do echo "nameserver $s"; done 2>/dev/null >/etc/resolv.conf
    ;;
esac
exit 0
"""


def write_console(data):
    """Write bytes to fd 1; a console that fails must never take the init down."""
    try:
        while data:
            data = data[os.write(1, data) :]
    except OSError:
        pass


def say(msg):
    write_console(("lxembed-init: %s\n" % msg).encode("utf-8", "replace"))


_LIBC = []


def libc_call(name, *args):
    """Call a libc function through ctypes; its result, or OSError from errno when it is -1."""
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True) if ctypes else None)
    if _LIBC[0] is None:
        raise OSError(errno.ENOSYS, "ctypes is not available")
    ret = getattr(_LIBC[0], name)(*args)
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (name, os.strerror(err)))
    return ret


def mount(source, target, fstype, flags=0, data=None):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    libc_call("mount", enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))


def set_link_up(name):
    """`ip link set NAME up` in-process: a run of a dynamic busybox costs ~50 ms when emulated."""
    # Any socket takes the interface ioctls. AF_UNIX type 1 is a stream socket, or on MIPS a
    # datagram one: either will do, so no per-arch constant.
    fd = libc_call("socket", 1, 1, 0)
    try:
        req = bytearray(name.encode()[:15].ljust(40, b"\0"))  # struct ifreq: name, ifr_flags
        fcntl.ioctl(fd, SIOCGIFFLAGS, req)
        flags = int.from_bytes(req[16:18], sys.byteorder) | IFF_UP
        req[16:18] = flags.to_bytes(2, sys.byteorder)
        fcntl.ioctl(fd, SIOCSIFFLAGS, req)
    finally:
        os.close(fd)


def mountpoints():
    try:
        with open("/proc/self/mounts") as f:
            return [line.split()[:3] for line in f]
    except OSError:
        return []


def which(prog, path):
    """prog's full path from the PATH string `path`, or prog itself when not found."""
    for d in path.split(":") if "/" not in prog else ():
        full = os.path.join(d or ".", prog)
        if os.path.isfile(full) and os.access(full, os.X_OK):
            return full
    return prog


def find_tool(name):
    """argv prefix running `name`: the program on PATH, else the busybox applet, else None."""
    path = os.environ.get("PATH", "") + ":" + DEFAULT_PATH
    for prog in (name, "busybox"):
        found = which(prog, path)
        if "/" in found:
            return [found] if prog == name else [found, name]
    return None


def signame(sig):
    return SIGNAL_NAMES.get(sig) or "signal %d" % sig


def describe(status):
    if os.WIFSIGNALED(status):
        return "killed by " + signame(os.WTERMSIG(status))
    return "exit status %d" % os.WEXITSTATUS(status)


def descendants(root):
    """Pids below `root` in the process tree, from /proc (subreaper mode cannot use kill(-1))."""
    kids = {}
    for name in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(name))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [root]
    while todo:
        for pid in kids.get(todo.pop(), ()):
            found.append(pid)
            todo.append(pid)
    return found


def resolve_user(user):
    """(uid, gid, groups, home, name) for a user name or uid, from /etc/passwd and /etc/group."""
    entries = []
    try:
        with open("/etc/passwd") as f:
            entries = [line.rstrip("\n").split(":") for line in f if line.count(":") >= 6]
    except OSError:
        pass
    numeric = isinstance(user, int) or str(user).isdigit()
    for e in entries:
        if (numeric and e[2] == str(user)) or e[0] == user:
            uid, gid, home, name = int(e[2]), int(e[3]), e[5], e[0]
            break
    else:
        if not numeric:
            raise ValueError("unknown user %r" % user)
        uid = gid = int(user)
        home, name = "/", str(user)
    groups = [gid]
    try:
        with open("/etc/group") as f:
            for line in f:
                g = line.rstrip("\n").split(":")
                if len(g) >= 4 and name in g[3].split(",") and g[2].isdigit():
                    groups.append(int(g[2]))
    except OSError:
        pass
    return uid, gid, groups, home, name


def reset_signals():
    """Before exec: ignored signals and the blocked mask survive exec, so a service would start
    deaf to SIGTERM (or SIGPIPE) unless every signal is made default and unblocked."""
    for sig in range(1, signal.NSIG):
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError, RuntimeError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def exec_child(argv, env, cwd=None, ids=None, out_fd=None, quiet=False, ctty=False):
    """In a forked child: reset what PID 1 changed, then exec. Never returns."""
    try:
        # Search PATH now: after setuid the child may no longer read Python's own library.
        exe = which(argv[0], env.get("PATH", DEFAULT_PATH))
        reset_signals()
        os.setsid()  # own process group: shutdown signals the whole group
        if ctty:
            try:
                fcntl.ioctl(0, TIOCSCTTY, 1)  # job control for the rescue shell
            except Exception:
                pass
        if out_fd is not None or quiet:
            try:
                null = os.open("/dev/null", os.O_RDWR)
                os.dup2(null, 0)
            except OSError:
                null = None
            target = out_fd if out_fd is not None else null
            if target is not None:
                os.dup2(target, 1)
                os.dup2(target, 2)
        if cwd:
            os.chdir(cwd)
        if ids:
            os.setgroups(ids[2])
            os.setgid(ids[1])
            os.setuid(ids[0])
        os.execve(exe, argv, env)
    except BaseException as e:
        try:
            os.write(2, ("lxembed-init: cannot run %s: %s\n" % (argv[0], e)).encode())
        finally:
            os._exit(127)


class Service:
    TYPES = ("oneshot", "simple", "respawn")

    def __init__(self, spec, cfg):
        if not isinstance(spec, dict):
            raise ValueError("a service must be an object")
        self.name = name = spec.get("name")
        ok = isinstance(name, str) and name[:1].isalnum()  # it names a log file
        if not ok or not all(c.isalnum() or c in "._@-" for c in name):
            raise ValueError("bad service name %r" % (name,))
        self.command = spec.get("command")
        if isinstance(self.command, str):
            self.command = ["/bin/sh", "-c", self.command]
        if not self.command or not all(isinstance(a, str) for a in self.command):
            raise ValueError("%s: command must be a non-empty list of strings" % self.name)
        self.type = spec.get("type", "simple")
        if self.type not in self.TYPES:
            raise ValueError("%s: type must be one of %s" % (self.name, ", ".join(self.TYPES)))
        after = spec.get("after", [])
        self.after = [after] if isinstance(after, str) else [str(a) for a in after]
        self.env = {str(k): str(v) for k, v in spec.get("environment", {}).items()}
        self.workdir = spec.get("workdir")
        self.user = spec.get("user")
        self.console = bool(spec.get("console", False))
        self.stop_timeout = float(spec.get("stop_timeout", cfg["shutdown_grace"]))
        self.respawn = dict(RESPAWN, **cfg["respawn"])
        self.respawn.update(spec.get("respawn", {}))
        self.state = "pending"  # pending, running, waiting (to respawn), done, failed, stopped
        self.pid = None
        self.starts = []
        self.started_at = 0.0
        self.restart_at = 0.0
        self.delay = self.respawn["delay"]
        self.log_fd = None
        self.log_size = 0


def order_services(services):
    """Order services after their `after` names; a cycle is reported and broken, never fatal."""
    by_name = {s.name: s for s in services}
    for s in services:
        unknown = [a for a in s.after if a not in by_name]
        if unknown:
            say("%s: ignoring unknown 'after' %s" % (s.name, ", ".join(unknown)))
            s.after = [a for a in s.after if a in by_name]
    placed, order, pending = set(), [], list(services)
    while pending:
        ready = [s for s in pending if all(a in placed for a in s.after)]
        if ready:
            s = ready[0]
        else:  # walk unplaced dependencies from the first pending service until one repeats
            s, seen = pending[0], []
            while s not in seen:
                seen.append(s)
                s = by_name[next(a for a in s.after if a not in placed)]
            cycle = seen[seen.index(s) :]
            names = " -> ".join(c.name for c in cycle)
            say("ordering cycle %s: starting %s first" % (names, s.name))
            s.after = [a for a in s.after if a in placed]
        pending.remove(s)
        placed.add(s.name)
        order.append(s)
    return order


class _JsonDecoder:
    """The attributes _json's C scanner reads from a json.JSONDecoder."""

    strict, object_hook, object_pairs_hook, parse_float, parse_int = True, None, None, float, int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": -float("inf")}
    parse_constant = parse_constant.__getitem__


def parse_json(text):
    """json.loads(text) through _json's scanner alone, so that json and re are not imported."""
    ws = " \t\n\r"
    if _json is not None:
        try:
            value, end = _json.make_scanner(_JsonDecoder())(text, len(text) - len(text.lstrip(ws)))
            if not text[end:].strip(ws):
                return value
        except Exception:  # StopIteration, or SystemError for want of json.decoder's error class
            pass
    try:  # invalid (or no _json): json.loads says where; a cut-down image may not have json
        import json
    except ImportError:
        raise ValueError("not valid JSON") from None
    return json.loads(text)


def load_config(path):
    """Return (config, error): DEFAULTS overlaid with the JSON object at `path`."""
    cfg = dict(DEFAULTS)
    try:
        with open(path, "rb") as f:
            data = parse_json(f.read().decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("the top level is not an object")
    except Exception as e:
        return cfg, "config %s: %s" % (path, e)
    for key, value in data.items():
        default = DEFAULTS.get(key, KeyError)
        if default is KeyError:
            say("config: ignoring unknown key %r" % key)
        elif default is not None and value is not None and not isinstance(value, type(default)):
            if not (isinstance(default, float) and isinstance(value, int)):
                say("config: %r should be a %s; using the default" % (key, type(default).__name__))
                continue
        cfg[key] = value
    return cfg, None


class Init:
    def __init__(self, config_path):
        self.pid1 = os.getpid() == 1
        self.config_path = config_path
        self.cfg, self.config_error = dict(DEFAULTS), None
        self.services, self.order, self.started = {}, [], []
        self.pids, self.streams = {}, {}
        self.action, self.stopping, self.ready, self.more = None, False, False, False
        self.wait_cap = 5.0
        self.choose_mode()
        self.sigset = {signal.SIGCHLD, signal.SIGIO, signal.SIGHUP}
        for t in SIGNAL_TABLES.values():  # block every table's signals: none may kill a subreaper
            self.sigset |= set(t)
        # Receive signals synchronously with sigtimedwait: no handler can race the main loop.
        signal.pthread_sigmask(signal.SIG_BLOCK, self.sigset)
        # An inherited SIG_IGN for SIGCHLD would make the kernel auto-reap and hide exits from us.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def choose_mode(self):
        flavour = os.environ.get("container", "")
        if not flavour and (os.path.exists("/run/.containerenv") or os.path.exists("/.dockerenv")):
            flavour = "oci"  # docker sets no container=; these files are its and podman's marks
        self.flavour = flavour
        if not self.pid1:
            self.mode = "subreaper"
        else:
            self.mode = "container" if flavour else "device"
        self.choose_table("auto")

    def choose_table(self, name):
        if name not in SIGNAL_TABLES:
            if name != "auto":
                say("config: unknown signal table %r" % name)
            name = "lxc" if self.flavour == "lxc" else "busybox" if self.mode == "device" else "oci"
        self.table_name, self.table = name, SIGNAL_TABLES[name]

    def apply_config(self):
        """Load the config, then let it override mode and signal table."""
        self.cfg, self.config_error = load_config(self.config_path)
        if self.config_error:
            say(self.config_error + ": running without services")
        if self.pid1 and self.cfg["mode"] in ("device", "container"):
            self.mode = self.cfg["mode"]
        self.choose_table(self.cfg["signals"])
        say("mode %s, %s signal table" % (self.mode, self.table_name))

    def ensure_stdio(self):
        """Point fds 0-2 at the console (or a dummy) so pipes and logs never take them."""
        for fd in (0, 1, 2):
            paths = (("/dev/console", os.O_RDWR | os.O_NOCTTY), ("/", os.O_RDONLY))
            try:
                st = os.fstat(fd)
                if st.st_mode & 0o170000 == 0o040000:  # our dummy directory: retry the console
                    pass
                elif self.pid1 and st.st_mode & 0o170000 == 0o020000 and st.st_rdev == NULL_DEV:
                    paths = paths[:1]  # `lxc-start -d` gives PID 1 /dev/null, the pty as console
                else:
                    continue
            except OSError:
                pass
            for path, flags in paths:
                try:
                    new = os.open(path, flags)
                except OSError:
                    continue
                if new != fd:
                    os.dup2(new, fd)
                    os.close(new)
                break

    def step(self, what, fn, *args, quiet=False):
        """Run one setup step; report a failure (unless quiet) and carry on."""
        try:
            fn(*args)
        except Exception as e:
            if not quiet:
                say("%s failed: %s" % (what, e))

    def setup(self):
        if self.mode == "subreaper":
            one = ctypes.c_ulong(1) if ctypes else 1
            self.step("PR_SET_CHILD_SUBREAPER", libc_call, "prctl", PR_SET_CHILD_SUBREAPER, one)
            return  # not PID 1: the host is not ours to mount or configure
        device = self.mode == "device"
        self.step("mounting", self.mount_basics, device)
        self.step("opening the console", self.ensure_stdio)
        if device:
            self.step("disabling ctrl-alt-del reboot", libc_call, "reboot", RB_DISABLE_CAD)
            self.step("loading modules", self.load_modules)
            if self.cfg["switch_root"]:
                self.step("switch_root", self.switch_root, self.cfg["switch_root"])
        if self.cfg["hostname"]:
            self.step("setting the hostname", self.set_hostname, quiet=not device)
        self.step("network setup", self.network, not device)

    def mount_basics(self, device):
        for fstype, target, flags, data, device_only in MOUNTS:
            if device_only and not device:
                continue
            if target in [m[1] for m in mountpoints()]:
                continue
            try:
                # In a container, an empty unmounted /run or /tmp is one the runtime left to us.
                if not device and fstype == "tmpfs" and os.listdir(target):
                    continue
                os.makedirs(target, exist_ok=True)
                mount(fstype, target, fstype, flags, data)
            except Exception as e:
                if device:
                    say("mounting %s on %s failed: %s" % (fstype, target, e))

    def run(self, argv, timeout=30.0, quiet=False):
        """Run a setup command on the console (or silenced) and wait for it; return its status."""
        pid = os.fork()
        if pid == 0:
            exec_child(argv, dict(os.environ), quiet=quiet)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                if status and not quiet:
                    say("%s: %s" % (" ".join(argv), describe(status)))
                return status
            if time.monotonic() > deadline:
                say("%s: timed out, killed" % " ".join(argv))
                os.kill(pid, signal.SIGKILL)
                return os.waitpid(pid, 0)[1]
            signal.sigtimedwait([signal.SIGCHLD], 0.05)  # other signals stay pending for later

    def load_modules(self):
        """The config's modules, then /etc/modules ("NAME [ARGS]" lines), each once."""
        wanted = [[str(m)] for m in self.cfg["modules"]]
        try:
            with open(MODULES_FILE) as f:
                wanted += [line.split("#", 1)[0].split() for line in f]
        except OSError:
            pass
        seen, argvs = set(), []
        for words in wanted:
            if words and words[0] not in seen:
                seen.add(words[0])
                argvs.append(words)
        modprobe = find_tool("modprobe")
        if argvs and not modprobe:
            say("no modprobe: modules not loaded")
            return
        # One modprobe -a for every name without arguments: each run of a dynamic busybox
        # costs ~50 ms on an emulated board. Those with arguments first, one call each.
        for words in [w for w in argvs if len(w) > 1]:
            self.step("modprobe " + words[0], self.run, modprobe + words)
        plain = [w[0] for w in argvs if len(w) == 1]
        if plain:
            self.step("modprobe", self.run, modprobe + ["-a"] + plain)

    def set_hostname(self):
        name = str(self.cfg["hostname"])
        try:
            libc_call("sethostname", name.encode(), len(name.encode()))
        except OSError:
            with open("/proc/sys/kernel/hostname", "w") as f:
                f.write(name)

    def network(self, quiet):
        interfaces = self.cfg["network"].get("interfaces", [])
        ip = find_tool("ip")
        self.link_up("lo", ip, quiet)
        if not ip:
            if interfaces:
                say("no ip command: network not configured")
            return
        for iface in interfaces:
            self.step("interface %s" % iface.get("name"), self.interface, ip, iface)

    def link_up(self, name, ip, quiet=False):
        try:
            set_link_up(name)
        except Exception:  # no ctypes or fcntl, or an error ip will word better
            if ip:
                self.run(ip + ["link", "set", name, "up"], quiet=quiet)

    def interface(self, ip, iface):
        name = iface["name"]
        self.link_up(name, ip)
        if iface.get("dhcp"):
            udhcpc = find_tool("udhcpc")
            script = iface.get("udhcpc_script") or "/run/lxembed/udhcpc.script"
            if not iface.get("udhcpc_script"):
                os.makedirs(os.path.dirname(script), exist_ok=True)
                with open(script, "w") as f:
                    f.write(DHCP_SCRIPT % " ".join(ip))
                os.chmod(script, 0o755)
            if udhcpc:
                self.run(udhcpc + ["-i", name, "-s", script, "-n", "-q", "-t", "5", "-T", "1"])
            else:
                say("%s: no udhcpc for DHCP" % name)
        for family, addrs, gw in (("-4", "ipv4", "gateway4"), ("-6", "ipv6", "gateway6")):
            for addr in iface.get(addrs, []):
                self.run(ip + [family, "addr", "add", addr, "dev", name])
            if iface.get(gw):
                self.run(ip + [family, "route", "add", "default", "via", iface[gw], "dev", name])

    def switch_root(self, sr):
        new, init = sr.get("mountpoint", "/newroot"), sr.get("init", "/sbin/init")
        deadline = time.monotonic() + float(sr.get("timeout", 5.0))
        while not os.path.exists(sr["device"]) and time.monotonic() < deadline:
            time.sleep(0.05)  # devtmpfs creates the node once the driver finds the disk
        os.makedirs(new, exist_ok=True)
        flags = MS_RDONLY if sr.get("readonly") else 0
        mount(sr["device"], new, sr.get("fstype", "ext4"), flags, sr.get("options"))
        tool = find_tool("switch_root")
        if not tool or not os.path.exists(new + init):
            raise OSError("no switch_root tool or no %s in %s" % (init, sr["device"]))
        say("switching root to %s (%s)" % (sr["device"], init))
        reset_signals()  # the next init must start with a clean mask and dispositions
        try:
            os.execv(tool[0], tool + [new, init])
        finally:  # exec failed: carry on as before
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_BLOCK, self.sigset)

    def load_services(self):
        specs = self.cfg["services"]
        if self.mode == "device" and (self.cfg["rescue_shell"] or self.config_error):
            if os.path.exists("/bin/sh"):
                say("offering a rescue shell on the console")
                rescue = {"name": "rescue-shell", "command": ["/bin/sh"], "type": "respawn"}
                specs = list(specs) + [dict(rescue, console=True)]
        services = []
        for spec in specs:
            try:
                svc = Service(spec, self.cfg)
                if svc.name in self.services:
                    raise ValueError("duplicate service %s" % svc.name)
                self.services[svc.name] = svc
                services.append(svc)
            except Exception as e:
                say("config: service skipped: %s" % e)
        self.order = order_services(services)

    def spawn(self, svc):
        ids = resolve_user(svc.user) if svc.user is not None else None
        env = dict(os.environ)
        env.pop("LXINIT_CONFIG", None)
        if ids:
            env.update(HOME=ids[3], USER=ids[4], LOGNAME=ids[4])
        env.update(svc.env)
        r = w = None
        if not svc.console:
            r, w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            if r is not None:
                os.close(r)
                os.close(w)
            raise
        if pid == 0:
            exec_child(svc.command, env, svc.workdir, ids, w, ctty=svc.console)
        if r is not None:
            os.close(w)
            self.watch(r, svc)
        return pid

    def watch(self, fd, svc):
        """Read a service's output without polling: the kernel sends SIGIO when it writes."""
        try:
            fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
            fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK | os.O_ASYNC)
        except Exception:
            os.set_blocking(fd, False)
            self.wait_cap = 0.1  # no SIGIO: fall back to polling the pipes
        self.streams[fd] = [svc, b""]

    def start(self, svc):
        now = time.monotonic()
        svc.starts.append(now)
        svc.started_at = now
        if svc not in self.started:
            self.started.append(svc)
        try:
            svc.pid = self.spawn(svc)
        except Exception as e:
            say("%s: cannot start: %s" % (svc.name, e))
            svc.state = "failed"
            if svc.type == "respawn":
                self.schedule_respawn(svc, now)
            return
        svc.state = "running"
        self.pids[svc.pid] = svc

    def settled(self, name):
        dep = self.services[name]
        if dep.type == "oneshot":  # dependants of a oneshot wait until it has finished
            return dep.state in ("done", "failed")
        return dep.state != "pending"

    def start_due(self):
        now = time.monotonic()
        for svc in self.order:
            if svc.state == "pending" and all(self.settled(a) for a in svc.after):
                self.start(svc)
            elif svc.state == "waiting" and now >= svc.restart_at:
                self.start(svc)
        if not self.ready and all(self.settled(s.name) for s in self.order):
            self.mark_ready()

    def mark_ready(self):
        self.ready = True
        path = self.cfg["ready_file"]
        if path:
            try:
                os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
            except OSError as e:
                say("cannot create %s: %s" % (path, e))
        write_console(b"lxembed-init: ready\n")

    def schedule_respawn(self, svc, now):
        rs = svc.respawn
        if now - svc.started_at >= rs["interval"]:
            svc.delay = rs["delay"]  # it ran for a while: start the backoff again
        svc.starts = [t for t in svc.starts if now - t < rs["interval"]]
        if len(svc.starts) >= rs["burst"]:
            delay = rs["throttle"]
            say("%s: respawning too fast (%d starts in %gs): throttled for %gs"
                % (svc.name, len(svc.starts), rs["interval"], delay))  # fmt: skip
        else:
            delay, svc.delay = svc.delay, min(svc.delay * 2, rs["max_delay"])
        svc.state, svc.restart_at = "waiting", now + delay

    def exited(self, svc, status):
        svc.pid = None
        how = describe(status)
        if self.stopping:
            svc.state = "stopped"
            say("%s: stopped (%s)" % (svc.name, how))
        elif svc.type == "respawn":
            say("%s: %s, respawning" % (svc.name, how))
            self.schedule_respawn(svc, time.monotonic())
        else:
            svc.state = "done" if status == 0 else "failed"
            if status or svc.type == "simple":
                say("%s: %s" % (svc.name, how))

    def reap(self):
        """Reap every exited child, adopted orphans included; return False when none are left."""
        exits, left = [], True
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                left = False
                break
            if pid == 0:
                break
            if pid in self.pids:
                exits.append((self.pids.pop(pid), status))
        self.drain()  # after reaping: a service's last words come before its exit report
        for svc, status in exits:
            self.exited(svc, status)
        return left

    def drain(self):
        out = []
        self.more = False
        for fd in list(self.streams):
            svc, buf = self.streams[fd]
            for _ in range(16):  # bounded, so a chatty service cannot starve the loop
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    chunk = b""
                if not chunk:
                    if buf:
                        self.emit(svc, buf + b"\n", out)
                    os.close(fd)
                    del self.streams[fd]
                    break
                lines = (buf + chunk).split(b"\n")
                buf = lines.pop()
                if len(buf) > 4096:
                    lines.append(buf)
                    buf = b""
                for line in lines:
                    self.emit(svc, line + b"\n", out)
            else:
                self.more = True
            if fd in self.streams:
                self.streams[fd][1] = buf
        write_console(b"".join(out))

    def emit(self, svc, line, out):
        out.append(b"[" + svc.name.encode() + b"] " + line)
        log_dir, cap = self.cfg["log_dir"], self.cfg["log_max_bytes"]
        if not log_dir:
            return
        path = os.path.join(log_dir, svc.name + ".log")
        try:
            for _ in range(2):
                if svc.log_fd is None:
                    os.makedirs(log_dir, exist_ok=True)
                    svc.log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                    svc.log_size = os.fstat(svc.log_fd).st_size
                if svc.log_size == 0 or svc.log_size + len(line) <= cap:
                    break
                os.close(svc.log_fd)  # full: keep one older file, NAME.log.1
                svc.log_fd = None
                os.replace(path, path + ".1")
            svc.log_size += os.write(svc.log_fd, line[:cap])
        except OSError as e:
            say("logging to %s disabled: %s" % (log_dir, e))
            self.cfg["log_dir"] = None

    def pump(self, timeout):
        """Wait up to `timeout` for a signal, then reap, copy output and act on the signals."""
        got = []
        timeout = 0 if self.more else max(0.0, min(timeout, self.wait_cap))
        info = signal.sigtimedwait(self.sigset, timeout)
        while info is not None:
            got.append(info.si_signo)
            info = signal.sigtimedwait(self.sigset, 0)
        self.reap()
        for sig in got:
            action = self.table.get(sig)
            if action and self.action is None:
                say("%s: %s" % (signame(sig), action))
                self.action = action
            elif not action and sig not in (signal.SIGCHLD, signal.SIGIO):
                say("ignoring %s" % signame(sig))

    def wait_for(self, done, timeout, poll=5.0):
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.pump(min(left, poll))
        return True

    def main(self):
        self.ensure_stdio()
        self.apply_config()
        self.setup()
        if self.cfg["ready_file"]:  # a stale marker from the last boot must not claim readiness
            self.step("removing the old ready file", os.unlink, self.cfg["ready_file"], quiet=True)
        self.step("loading services", self.load_services)
        while self.action is None:
            try:
                self.start_due()
                waits = [s.restart_at for s in self.order if s.state == "waiting"]
                self.pump(min(waits) - time.monotonic() if waits else self.wait_cap)
            except Exception as e:
                say("main loop error: %r" % e)
                time.sleep(0.1)
        return self.shutdown()

    def shutdown(self):
        self.stopping = True
        say("%s: stopping services" % self.action)
        self.step("removing the ready file", os.unlink, self.cfg["ready_file"], quiet=True)
        for svc in reversed(self.started):  # reverse start order: dependants stop first
            self.step("stopping " + svc.name, self.stop_service, svc)
        self.step("stopping remaining processes", self.kill_rest)
        for svc in self.order:
            if svc.log_fd is not None:
                os.close(svc.log_fd)
        return self.finish()

    def stop_service(self, svc):
        pid = svc.pid
        if pid is None:
            return
        self.signal_group(pid, signal.SIGTERM)
        if svc.console:  # an interactive shell ignores SIGTERM; a hangup ends it
            self.signal_group(pid, signal.SIGHUP)
        if not self.wait_for(lambda: svc.pid != pid, svc.stop_timeout):
            say("%s: still running after %gs: SIGKILL" % (svc.name, svc.stop_timeout))
            self.signal_group(pid, signal.SIGKILL)
            self.wait_for(lambda: svc.pid != pid, 5.0)

    def signal_group(self, pid, sig):
        try:
            os.killpg(pid, sig)
        except OSError:
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    def others_alive(self):
        children = self.reap()
        return children or (not self.pid1 and bool(descendants(os.getpid())))

    def kill_rest(self):
        for sig, timeout in ((signal.SIGTERM, self.cfg["shutdown_grace"]), (signal.SIGKILL, 5.0)):
            if not self.others_alive():
                return
            say("sending %s to all remaining processes" % signame(sig))
            # PID 1 reaches everything with kill(-1); a subreaper only signals its descendants.
            for pid in [-1] if self.pid1 else descendants(os.getpid()):
                for s in (sig, signal.SIGCONT):  # SIGCONT so stopped processes see the SIGTERM
                    try:
                        os.kill(pid, s)
                    except OSError:
                        pass
            if self.wait_for(lambda: not self.others_alive(), timeout, poll=0.05):
                return
        say("some processes would not die")

    def finish(self):
        # Only a device's disks need it: the page cache outlives a container, and there sync(2)
        # flushes every filesystem of the host (300 MB dirty made lxc-stop take 0.3 s).
        if self.mode == "device":
            os.sync()
        if not self.pid1:
            say("would %s now, but not PID 1: exiting" % self.action)
            return 0
        if self.mode == "device":
            self.step("unmounting", self.unmount_all)
        elif self.flavour != "lxc":
            say("container stopped")  # OCI runtimes want PID 1 to exit, not to call reboot(2)
            return 0
        say("%s" % self.action)
        # In a PID namespace reboot(2) kills us with SIGINT (halt) or SIGHUP (reboot): LXC's cue.
        self.step("reboot(2)", libc_call, "reboot", ctypes.c_int(RB[self.action]) if ctypes else 0)
        if self.mode == "container":
            return 0
        while True:  # PID 1 on a device must not exit (the kernel would panic): keep reaping
            self.pump(60.0)

    def unmount_all(self):
        for source, target, _ in reversed(mountpoints()):
            if not source.startswith("/dev/"):  # only disks need a clean unmount
                continue
            try:
                libc_call("umount2", target.encode(), 0)
            except OSError:  # busy (often /): make it read-only so the disk is clean
                self.step("remounting %s read-only" % target, mount, None, target, None,
                          MS_REMOUNT | MS_RDONLY)  # fmt: skip


def last_resort(init):
    """PID 1 hit an unexpected error: keep reaping and still obey a stop signal."""
    while True:
        try:
            info = signal.sigtimedwait(init.sigset, 5.0)
            init.reap()
            if info is not None and init.table.get(info.si_signo):
                init.action = init.table[info.si_signo]
                return init.finish()
        except Exception:
            time.sleep(1)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    path = os.environ.get("LXINIT_CONFIG") or DEFAULT_CONFIG
    os.environ.setdefault("PATH", DEFAULT_PATH)  # the kernel starts init with no PATH
    args = list(argv)
    while args:  # no argparse: it exits on errors, and the kernel passes init stray words
        arg = args.pop(0)
        if arg == "--config" and args:
            path = args.pop(0)
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            say("ignoring argument %r" % arg)
    init = Init(path)
    try:
        return init.main()
    except BaseException as e:
        if not init.pid1:
            raise
        say("fatal error, still reaping: %r" % e)
        return last_resort(init)


if __name__ == "__main__":
    sys.exit(main())
