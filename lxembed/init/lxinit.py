"""lxembed-init: a small PID 1 for lxembed devices and containers.

Run as ``python3 -I -S lxinit.py [--config PATH]`` (default config /etc/lxembed/init.json, or
$LXINIT_CONFIG). This file is copied alone into images: it uses only the standard library, must
never import lxembed, and must stay Python 3.7 compatible. docs/init.md describes the config JSON
and the signal tables.

Modes: "device" (PID 1 outside a container: mount, modules, hostname, network), "container"
(PID 1 under LXC/OCI: only what the runtime left undone) and "subreaper" (not PID 1, as in the
tests: no system setup, orphans are adopted through PR_SET_CHILD_SUBREAPER, and shutdown exits
instead of calling reboot(2)).

The file reads in parts, top to bottom, each usable alone:
  helpers       libc calls, processes, users, the config JSON
  Console       the console writer: non-blocking, a bounded buffer, dropped bytes counted
  Runtime       what the init runs as (PID 1? which container?) and what a signal means
  SystemSetup   mounts, modules, hostname, network, switch_root; finish() halts or exits
  ServiceOutput each service's output to the console and its log file
  Supervisor    services: start in order, reap, respawn, shut down
  Init, main()  the parts in order, inside a guard that keeps PID 1 reaping whatever fails
"""

import errno
import sys
import time

STARTED = time.monotonic()  # the init's code begins: what came before is CPython's start

# Imports are boot time: on an emulated arm64 `import signal` costs 0.1 s (its enums pull in
# enum, functools, collections) and `import json` 0.17 s more (re). The C modules under them
# do all the init needs; the wrappers are the fallback where the C modules are not importable.
# `os` too is posix plus a little Python, and importing it runs the frozen os, posixpath, stat
# and _collections_abc: a quarter of CPython's own start (5 M instructions). The init takes
# posix and writes the few functions of os it uses (_PosixOs, below).
try:
    import posix
except ImportError:  # not a POSIX system: the real thing
    posix = None
    import os
try:
    import _signal as signal
except ImportError:
    import signal
try:
    import _json
except ImportError:
    _json = None
try:  # libc calls through ctypes' C half: the ctypes package costs 0.05-0.1 s to import
    import _ctypes  # when emulated (its types, struct, and its classes made at import)
except ImportError:  # a stripped image: no mounts or reboot(2), but still a working init
    _ctypes = None
try:
    import fcntl
except ImportError:
    fcntl = None


class _PosixOs:
    """`os` for the init: posix's functions and constants, environ (str, as os has it), and
    os.path.{join,dirname,exists,isfile,isdir} and os.makedirs as posixpath and os define
    them. environ is a plain dict: the init hands it to every exec (execve), and setting a
    variable does not putenv() it."""

    def __init__(self):
        self.__dict__.update((k, v) for k, v in vars(posix).items() if not k.startswith("__"))
        enc, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
        self.environ = {k.decode(enc, errors): v.decode(enc, errors)
                        for k, v in posix.environ.items()}
        self.path = self

    @staticmethod
    def join(a, *parts):
        path = a
        for b in parts:
            if b.startswith("/"):
                path = b
            elif not path or path.endswith("/"):
                path += b
            else:
                path += "/" + b
        return path

    @staticmethod
    def dirname(p):
        head = p[:p.rfind("/") + 1]
        return head.rstrip("/") if head and head != "/" * len(head) else head

    @staticmethod
    def _mode(p):
        try:
            return posix.stat(p).st_mode & S_IFMT
        except (OSError, ValueError):
            return None

    def exists(self, p):
        return self._mode(p) is not None

    def isfile(self, p):
        return self._mode(p) == S_IFREG

    def isdir(self, p):
        return self._mode(p) == S_IFDIR

    def makedirs(self, name, mode=0o777, exist_ok=False):
        head = self.dirname(name.rstrip("/"))
        if head and head != name and not self.exists(head):
            try:
                self.makedirs(head, exist_ok=exist_ok)  # os.makedirs: mode is the leaf's only
            except FileExistsError:
                pass
        try:
            posix.mkdir(name, mode)
        except OSError:
            if not exist_ok or not self.isdir(name):
                raise


if posix is not None:
    os = _PosixOs()

DEFAULT_CONFIG = "/etc/lxembed/init.json"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USAGE = """\
usage: lxinit.py [--config PATH] [--status]

The lxembed init (docs/init.md): PID 1 of an lxembed image or container, or, when not PID 1,
a subreaper running the services of PATH (default: $LXINIT_CONFIG, else %s).
--status prints the running init's health (every service: state, ready, restarts) and exits
0 when the device is healthy, 1 when it is not, 2 when no init has written its health.
As PID 1 other arguments are ignored (the kernel passes init its stray command-line words);
otherwise they are an error, so that a stray run never starts an init.
""" % DEFAULT_CONFIG
HALT, POWEROFF, REBOOT = "halt", "poweroff", "reboot"
TRIAL_FLAG = "lxembed.trial"  # on the kernel command line: this slot boots on trial (U-Boot)
EXIT = "exit"  # the main service ended: the init exits with its status
# Signal names by number; of two names the first in sorted order wins (SIGABRT, not SIGIOT), as
# in signal.Signals.
SIGNAL_NAMES = {
    int(getattr(signal, n)): n
    for n in sorted(dir(signal), reverse=True)
    if n.startswith("SIG") and not n.startswith("SIG_")
}
SIGNAL_NUMBERS = {name: num for num, name in SIGNAL_NAMES.items()}

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
S_IFMT, S_IFDIR, S_IFCHR, S_IFREG = 0o170000, 0o040000, 0o020000, 0o100000  # no `stat` import
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
    # LXC's cgroups (a device's service containers): the unified hierarchy, as systemd mounts it.
    ("cgroup2", "/sys/fs/cgroup", MS_NOSUID | MS_NODEV | MS_NOEXEC, None, True),
]
RESPAWN = {"delay": 0.1, "max_delay": 10.0, "burst": 5, "interval": 10.0, "throttle": 60.0}
# A container's start costs a second of a small CPU: back off from 1 s to a minute, doubling
# (that bounds the rate already: no burst throttle).
CONTAINER_RESPAWN = {"delay": 1.0, "max_delay": 60.0, "burst": 1000}
# Probes: how often once ready, how long one health_command may run, how long a probe may
# fail before the service is restarted, how long a start may take to become ready (0: no
# limit; a container's default is set by the build).
PROBE_DEFAULTS = {"health_interval": 10.0, "health_timeout": 5.0, "unhealthy_after": 30.0,
                  "ready_timeout": 0.0}
PROBE_POLL = 0.03  # while a start waits to be ready: a file test costs microseconds
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
    "watchdog": None,
    "firmware": None,
    "timeline": "/run/lxembed/timeline",
    "health_file": "/run/lxembed/health.json",
    "healthy_file": "/run/lxembed/healthy",
}
# Console output the init holds while the console does not take it (a UART at 115200 baud
# writes 11 KB/s; a console nobody reads takes nothing): beyond this, lines are dropped.
CONSOLE_BUFFER = 65536
# -- helpers: libc, processes, users, the config -------------------------------------------

if _ctypes is not None:
    # What `ctypes.CDLL(None, use_errno=True)` is made of, defined as ctypes itself defines it:
    # the int and unsigned long argument types and a C function returning int with errno saved.
    class c_int(_ctypes._SimpleCData):
        _type_ = "i"

    class c_ulong(_ctypes._SimpleCData):
        _type_ = "L"

    class _LibcFunction(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = c_int

    class _Program:
        """The dlopen(NULL) handle (the program and libc), where CFuncPtr looks symbols up."""

        _handle = None
else:
    c_int = c_ulong = None

_LIBC = {}


def libc_call(name, *args):
    """Call a libc function through ctypes; its result, or OSError from errno when it is -1."""
    if _ctypes is None:
        raise OSError(errno.ENOSYS, "ctypes is not available")
    if name not in _LIBC:
        if _Program._handle is None:
            _Program._handle = _ctypes.dlopen(None)
        _LIBC[name] = _LibcFunction((name, _Program))
    ret = _LIBC[name](*args)
    if ret == -1:
        err = _ctypes.get_errno()
        raise OSError(err, "%s: %s" % (name, os.strerror(err)))
    return ret


def _c_str(s):
    return None if s is None else s.encode()


def mount(source, target, fstype, flags=0, data=None):
    args = (_c_str(source), _c_str(target), _c_str(fstype), c_ulong(flags), _c_str(data))
    libc_call("mount", *args)


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


def exit_status(status):
    """A wait status as a shell (and docker, and tini) reports it: 128+N for signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


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


def reap_children():
    """Reap every exited child: ([(pid, status)], whether a child is left)."""
    exits = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return exits, False
        if pid == 0:
            return exits, True
        exits.append((pid, status))


def signal_all(pid1, sig):
    """`sig` (and SIGCONT, so stopped processes see it) to every process the init may end."""
    # PID 1 reaches everything with kill(-1); a subreaper only signals its descendants.
    for pid in [-1] if pid1 else descendants(os.getpid()):
        for s in (sig, signal.SIGCONT):
            try:
                os.kill(pid, s)
            except OSError:
                pass


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


def run_command(argv, timeout=30.0, quiet=False):
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
        WATCHDOG.feed()


def step(what, fn, *args, quiet=False):
    """Run one step; report a failure (unless quiet) and carry on. True when it worked."""
    try:
        fn(*args)
        return True
    except Exception as e:
        if not quiet:
            say("%s failed: %s" % (what, e))
        return False


def seconds(value, what):
    """A finite, non-negative number of seconds, or ValueError naming `what`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not 0 <= number < float("inf"):
        raise ValueError("%s must be a number of seconds, not %r" % (what, value))
    return number


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
            continue
        try:
            if key == "shutdown_grace":
                value = seconds(value, key)
            elif key == "log_max_bytes" and (isinstance(value, bool) or value < 1):
                raise ValueError("%s must be a positive number of bytes" % key)
        except (TypeError, ValueError) as e:
            say("config: %s; using the default" % e)
            continue
        if default is not None and value is not None and not isinstance(value, type(default)):
            if not (isinstance(default, float) and isinstance(value, int)):
                say("config: %r should be a %s; using the default" % (key, type(default).__name__))
                continue
        cfg[key] = value
    return cfg, None


# -- the console writer ------------------------------------------------------------------------


class Console:
    """The init's console (fd 1): writes that never block, so a console nobody reads or a slow
    UART cannot hold up reaping, signals or shutdown.

    What the console does not take at once waits in a buffer of CONSOLE_BUFFER bytes; whole lines
    that do not fit are dropped and counted, and the count is reported on the console as soon as
    the buffer has been written out.
    """

    def __init__(self, capacity=CONSOLE_BUFFER):
        self.capacity = capacity
        self.buf = bytearray()
        self.dropped = 0
        self.fd, self.toggle = 1, False
        self.reopen()

    def reopen(self):
        """Write through an open file description of the init's own, made non-blocking.

        O_NONBLOCK belongs to the file description, which fd 1 shares with `console` services
        (and, under a test, with the parent's terminal): set there, their writes would fail
        with EAGAIN. Opening /proc/self/fd/1 gives a new description of the same tty or pipe.
        A regular file or /dev/null never blocks, so fd 1 serves as it is. Without /proc (a
        device before its mounts) the flag is set around each write: no other process runs yet.
        """
        old, self.fd, self.toggle = self.fd, 1, False
        try:
            st = os.fstat(1)
            kind = st.st_mode & S_IFMT
            if not (kind == S_IFREG or (kind == S_IFCHR and st.st_rdev == NULL_DEV)):
                try:
                    flags = os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK
                    self.fd = os.open("/proc/self/fd/1", flags)  # close-on-exec, as os.open does
                except OSError:  # no /proc yet, or a socket (which cannot be reopened)
                    self.toggle = True
        except OSError:
            pass  # no fd 1: writes fail and are counted as dropped
        if old not in (1, self.fd):
            try:
                os.close(old)
            except OSError:
                pass

    @property
    def pending(self):
        return bool(self.buf)

    def write(self, data):
        """Write what the console takes now and queue the rest; never blocks."""
        partial = False
        if self.flush() and data:  # nothing queued: the console may take `data` straight away
            try:
                n = self._write(data)
            except BlockingIOError:
                n = 0
            except OSError:
                self.dropped += len(data)
                return
            partial = 0 < n < len(data) and data[n - 1 : n] != b"\n"
            data = data[n:]
        room = self.capacity - len(self.buf)
        if len(data) > room:  # keep the whole lines that fit; the rest is dropped
            cut = data.rfind(b"\n", 0, room) + 1 if room > 0 else 0
            self.dropped += len(data) - cut
            # A line begun on the console is ended, so the next one starts on a line of its own.
            data = data[:cut] if cut or not partial else b"\n"
        self.buf += data
        self.flush()

    def flush(self):
        """Write what the console takes now, then the count of what was dropped; True when
        nothing is left."""
        for _ in range(2):  # the buffer, then the report of what was dropped
            while self.buf:
                try:
                    n = self._write(self.buf)
                except BlockingIOError:
                    return False
                except OSError:  # EIO (hung-up tty), EPIPE (no reader): count it as dropped
                    self.dropped += len(self.buf)
                    del self.buf[:]
                    return False
                if not n:  # took nothing: as good as full
                    return False
                del self.buf[:n]
            if not self.dropped:
                return True
            self.buf += b"lxembed-init: %d bytes of console output dropped\n" % self.dropped
            self.dropped = 0
        return not self.buf

    def _write(self, data):
        if not self.toggle:
            return os.write(self.fd, data)
        was = os.get_blocking(self.fd)
        os.set_blocking(self.fd, False)
        try:
            return os.write(self.fd, data)
        finally:
            os.set_blocking(self.fd, was)

    def drain(self, patience=0.1, limit=2.0):
        """At the end: let the console take what is left while it makes progress, giving up
        after `patience` seconds without any and after `limit` seconds in all."""
        start = stalled = time.monotonic()
        while not self.flush():
            now = time.monotonic()
            if now - stalled > patience or now - start > limit:
                return
            left = len(self.buf)
            time.sleep(0.01)
            if self.flush():
                return
            if len(self.buf) != left:
                stalled = time.monotonic()


_CONSOLE = []


def console():
    """The init's one Console, made on first use."""
    if not _CONSOLE:
        _CONSOLE.append(Console())
    return _CONSOLE[0]


def say(msg):
    console().write(("lxembed-init: %s\n" % msg).encode("utf-8", "replace"))


class Timeline:
    """The boot's events with CLOCK_MONOTONIC times (seconds since the kernel started), one
    JSON object a line, for `lxembed test --timeline`. Kept in memory until the file can be
    opened (/run is mounted by the init itself), then appended as they happen."""

    def __init__(self):
        self.path, self.fd, self.pending = None, None, []
        self.echo = False  # each event on the console too (`lxembed boot --timeline`)

    def event(self, name, what, t=None):
        t = time.monotonic() if t is None else t
        line = ('{"t": %.3f, "name": "%s", "event": "%s"}\n' % (t, name, what)).encode()
        self.pending.append(line)
        if self.echo:
            console().write(ECHO_PREFIX + line)
        self.flush()

    def open(self, path):
        self.path = path
        self.flush()

    def flush(self):
        if not self.path or not self.pending:
            return
        try:
            if self.fd is None:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC
                self.fd = os.open(self.path, flags, 0o644)
            os.write(self.fd, b"".join(self.pending))
            del self.pending[:]
        except OSError:
            if len(self.pending) > 1000:  # never a place to write: keep memory bounded
                del self.pending[:500]


TIMELINE = Timeline()
WDIOC_SETTIMEOUT = 0xC0045706  # _IOWR('W', 6, int): the same number on every Linux arch


class Watchdog:
    """The board's hardware watchdog, fed from PID 1's own loop (never from a thread or a
    helper process): when that loop stalls — a hung set-up step, a CPU starved by a runaway
    process — the feeding stops and the hardware resets the device, which on a new firmware
    slot counts as a failed boot. Disarmed (magic close) only at a clean end."""

    def __init__(self):
        self.fd, self.interval, self.last = None, 5.0, 0.0

    def open(self, spec):
        path = spec.get("device") or "/dev/watchdog"
        timeout = int(seconds(spec.get("timeout", 10), "watchdog timeout")) or 10
        deadline = time.monotonic() + 2.0
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.02)  # devtmpfs makes the node once the driver has probed
        self.fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(self.fd, WDIOC_SETTIMEOUT, bytearray(timeout.to_bytes(4, sys.byteorder)))
        except OSError as e:
            say("watchdog %s: cannot set a %ds timeout (%s): using the driver's" %
                (path, timeout, e))
        self.interval = max(0.5, timeout / 3.0)
        self.feed()
        say("watchdog %s: fed every %gs, resets after %ds without" % (path, self.interval, timeout))

    def feed(self):
        now = time.monotonic()
        if self.fd is not None and now - self.last >= self.interval / 2:
            try:
                os.write(self.fd, b"\0")
                self.last = now
            except OSError:
                pass

    def disarm(self):
        """The magic close: a driver without nowayout stops counting."""
        if self.fd is not None:
            try:
                os.write(self.fd, b"V")
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


WATCHDOG = Watchdog()
ECHO_FLAG = "lxembed.timeline"  # on the kernel command line: events echoed on the console
ECHO_PREFIX = b"lxembed-timeline: "


# Kernel log lines that mark the kernel's part of a boot: (text, timeline name, event).
KERNEL_MARKS = (
    ("Trying to unpack rootfs image as initramfs", "kernel:initramfs", "start"),
    ("Freeing initrd memory", "kernel:initramfs", "done"),
    (" as init process", "kernel", "done"),  # "Run /init as init process": the exec of PID 1
)


def kernel_cmdline():
    try:
        with open("/proc/cmdline") as f:
            return f.read().split()
    except OSError:
        return []


def kernel_events():
    """The KERNEL_MARKS found in the kernel's log (/dev/kmsg: one record per read, stamped in
    microseconds of CLOCK_MONOTONIC), put on the timeline."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        for _ in range(100000):
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                return  # the end of the log
            except OSError as e:
                if e.errno == errno.EPIPE:  # records overwritten while reading: go on
                    continue
                return
            head, _, msg = record.decode("utf-8", "replace").partition(";")
            for text, name, what in KERNEL_MARKS:
                if text in msg:
                    TIMELINE.event(name, what, int(head.split(",")[2]) / 1e6)
    except (ValueError, IndexError):
        pass
    finally:
        os.close(fd)


def ensure_stdio(pid1):
    """Point fds 0-2 at the console (or a dummy) so pipes and logs never take them."""
    for fd in (0, 1, 2):
        paths = (("/dev/console", os.O_RDWR | os.O_NOCTTY), ("/", os.O_RDONLY))
        try:
            st = os.fstat(fd)
            if st.st_mode & S_IFMT == S_IFDIR:  # our dummy directory: retry the console
                pass
            elif pid1 and st.st_mode & S_IFMT == S_IFCHR and st.st_rdev == NULL_DEV:
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


# -- what the init runs as -------------------------------------------------------------------


class Runtime:
    """PID 1 or not, the container flavour, the mode, and the signal table the init obeys.

    Made first thing in main(), before anything that can fail: the guard that keeps PID 1
    reaping needs the blocked signals and the table even when nothing else got started.
    """

    def __init__(self):
        self.pid1 = os.getpid() == 1
        flavour = os.environ.get("container", "")
        if not flavour and (os.path.exists("/run/.containerenv") or os.path.exists("/.dockerenv")):
            flavour = "oci"  # docker sets no container=; these files are its and podman's marks
        self.flavour = flavour
        if not self.pid1:
            self.mode = "subreaper"
        else:
            self.mode = "container" if flavour else "device"
        self.sigset = {signal.SIGCHLD, signal.SIGIO, signal.SIGHUP}
        for t in SIGNAL_TABLES.values():  # block every table's signals: none may kill a subreaper
            self.sigset |= set(t)
        # Receive signals synchronously with sigtimedwait: no handler can race the main loop.
        signal.pthread_sigmask(signal.SIG_BLOCK, self.sigset)
        # An inherited SIG_IGN for SIGCHLD would make the kernel auto-reap and hide exits from us.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.choose_table("auto")

    def choose_table(self, name):
        if name not in SIGNAL_TABLES:
            if name != "auto":
                say("config: unknown signal table %r" % (name,))
            name = "lxc" if self.flavour == "lxc" else "busybox" if self.mode == "device" else "oci"
        self.table_name, self.table = name, SIGNAL_TABLES[name]

    def apply_config(self, cfg):
        """Let the config override the mode (as PID 1) and the signal table."""
        if self.pid1 and cfg["mode"] in ("device", "container"):
            self.mode = cfg["mode"]
        self.choose_table(cfg["signals"])

    def wait(self, timeout):
        """Signals that arrive within `timeout` seconds (all those pending once one has)."""
        got = []
        WATCHDOG.feed()  # every pass of every loop of PID 1 comes through here
        if WATCHDOG.fd is not None:
            timeout = min(timeout, WATCHDOG.interval)
        info = signal.sigtimedwait(self.sigset, max(0.0, timeout))
        while info is not None:
            got.append(info.si_signo)
            info = signal.sigtimedwait(self.sigset, 0)
        return got


# -- system set-up -----------------------------------------------------------------------------


class SystemSetup:
    """What PID 1 sets up before any service: mounts, modules, hostname, network, switch_root.

    Each step reports its failure and the next one runs: a half-configured system with a
    rescue shell beats a kernel panic.
    """

    def __init__(self, runtime, cfg):
        self.rt, self.cfg = runtime, cfg
        self.device = runtime.mode == "device"
        self.deferred = []  # services for the supervisor: udhcpc runs in the background
        self.leases = []  # the init's DHCP clients: the supervisor renews their leases

    def run(self):
        if self.rt.mode == "subreaper":
            one = c_ulong(1) if c_ulong else 1
            step("PR_SET_CHILD_SUBREAPER", libc_call, "prctl", PR_SET_CHILD_SUBREAPER, one)
            return  # not PID 1: the host is not ours to mount or configure
        self.timed("mounts", "mounting", self.mount_basics)
        step("opening the console", ensure_stdio, self.rt.pid1)
        console().reopen()  # /proc is there now: a file description of the init's own
        if self.device:
            step("disabling ctrl-alt-del reboot", libc_call, "reboot", RB_DISABLE_CAD)
            self.timed("modules", "loading modules", self.load_modules)
            if self.cfg["watchdog"]:
                step("opening the watchdog", WATCHDOG.open, self.cfg["watchdog"])
            if self.cfg["switch_root"]:
                step("switch_root", self.switch_root, self.cfg["switch_root"])
        if self.cfg["hostname"]:
            step("setting the hostname", self.set_hostname, quiet=not self.device)
        self.timed("network", "network setup", self.network)

    def timed(self, name, what, fn):
        """A set-up step, on the boot timeline as `setup:NAME`."""
        TIMELINE.event("setup:" + name, "start")
        step(what, fn)
        TIMELINE.event("setup:" + name, "done")

    def mount_basics(self):
        for fstype, target, flags, data, device_only in MOUNTS:
            if device_only and not self.device:
                continue
            if target in [m[1] for m in mountpoints()]:
                continue
            try:
                # In a container, an empty unmounted /run or /tmp is one the runtime left to us.
                if not self.device and fstype == "tmpfs" and os.listdir(target):
                    continue
                os.makedirs(target, exist_ok=True)
                mount(fstype, target, fstype, flags, data)
            except Exception as e:
                if self.device:
                    say("mounting %s on %s failed: %s" % (fstype, target, e))

    def load_modules(self):
        """/etc/modules ("NAME [ARGS]" lines), then the config's modules, each once: the build
        writes /etc/modules in load order, soft dependencies (libcrc32c's crc32c) included, which
        modules.dep does not know."""
        wanted = []
        try:
            with open(MODULES_FILE) as f:
                wanted = [line.split("#", 1)[0].split() for line in f]
        except OSError:
            pass
        wanted += [[str(m)] for m in self.cfg["modules"]]
        seen, argvs = set(), []
        for words in wanted:
            if words and words[0] not in seen:
                seen.add(words[0])
                argvs.append(words)
        argvs = insert_modules(argvs)  # what is left is modprobe's: aliases, compressed .ko
        if not argvs:
            return
        modprobe = find_tool("modprobe")
        if not modprobe:
            say("no modprobe: modules %s not loaded" % " ".join(w[0] for w in argvs))
            return
        # One modprobe -a for every name without arguments: each run of a dynamic busybox
        # costs ~50 ms on an emulated board. Those with arguments first, one call each.
        for words in [w for w in argvs if len(w) > 1]:
            step("modprobe " + words[0], run_command, modprobe + words)
        plain = [w[0] for w in argvs if len(w) == 1]
        if plain:
            step("modprobe", run_command, modprobe + ["-a"] + plain)

    def set_hostname(self):
        name = str(self.cfg["hostname"])
        try:
            libc_call("sethostname", name.encode(), len(name.encode()))
        except OSError:
            with open("/proc/sys/kernel/hostname", "w") as f:
                f.write(name)

    def network(self):
        interfaces = self.cfg["network"].get("interfaces", [])
        ip = find_tool("ip")
        self.link_up("lo", ip, quiet=not self.device)
        if not ip:
            if interfaces:
                say("no ip command: network not configured")
            return
        if self.device and any(i.get("vlan") is not None for i in interfaces):
            modprobe = find_tool("modprobe")  # 802.1Q may be a module the board did not list
            if insert_modules([["8021q"]]) and modprobe:
                step("modprobe 8021q", run_command, modprobe + ["8021q"], quiet=True)
        for iface in interfaces:
            name = iface.get("name") if isinstance(iface, dict) else iface
            step("interface %s" % (name,), self.interface, ip, iface)

    def link_up(self, name, ip, quiet=False):
        try:
            set_link_up(name)
        except Exception:  # no ctypes or fcntl, or an error ip will word better
            if ip:
                run_command(ip + ["link", "set", name, "up"], quiet=quiet)

    def interface(self, ip, iface):
        name = iface["name"]
        if iface.get("vlan") is not None and not self.add_vlan(ip, iface):
            return
        self.link_up(name, ip)
        if iface.get("dhcp"):
            self.dhcp(ip, name, iface.get("udhcpc_script"), iface.get("wait", True))
        for family, addrs, gw in (("-4", "ipv4", "gateway4"), ("-6", "ipv6", "gateway6")):
            for addr in iface.get(addrs, []):
                run_command(ip + [family, "addr", "add", addr, "dev", name])
            if iface.get(gw):
                run_command(ip + [family, "route", "add", "default", "via", iface[gw], "dev", name])

    def add_vlan(self, ip, iface):
        """Make the 802.1Q interface NAME on `link` with id `vlan`; False when it is not there."""
        name, link = iface["name"], iface.get("link")
        if not link:
            say("%s: a VLAN needs 'link', its parent interface: not configured" % name)
            return False
        if os.path.exists("/sys/class/net/" + name):
            return True  # made already (by an earlier init, or the runtime)
        self.link_up(link, ip)  # tagged frames go out through the parent: it must be up
        cmd = ["link", "add", "link", link, "name", name, "type", "vlan", "id", str(iface["vlan"])]
        return run_command(ip + cmd) == 0

    def dhcp(self, ip, name, script, wait=True):
        """Take a lease now (the init's own client), or (wait false) in the background.

        An interface with its own `udhcpc_script` runs udhcpc with it, once; with wait false
        as the oneshot service dhcp-NAME, in parallel with the services that do not need it."""
        if not script:
            try:
                resolv = self.cfg["network"].get("resolv_conf", RESOLV_CONF)
                client = DhcpClient(name, self.cfg["hostname"], resolv)
            except Exception as e:
                say("%s: no DHCP client: %s" % (name, e))
                return
            self.leases.append(client)
            if wait and not client.acquire():
                say("%s: no DHCP lease yet: asking again in the background" % name)
            return
        udhcpc = find_tool("udhcpc")
        argv = (udhcpc or []) + ["-i", name, "-s", script, "-n", "-q", "-t", "5", "-T", "1"]
        if udhcpc and not wait:
            self.deferred.append({"name": "dhcp-" + name, "type": "oneshot", "command": argv})
        elif udhcpc:
            run_command(argv)
        else:
            say("%s: no udhcpc for DHCP" % name)

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
        console().drain()  # what is still buffered would be lost with this process image
        reset_signals()  # the next init must start with a clean mask and dispositions
        try:
            os.execve(tool[0], tool + [new, init], os.environ)  # with the PATH main() set
        finally:  # exec failed: carry on as before
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_BLOCK, self.rt.sigset)


# -- DHCP and rtnetlink: a lease taken and kept in-process --------------------------------------
# udhcpc and its script cost five runs of a dynamic busybox, a third of a second of an emulated
# board's boot, and `udhcpc -q` never renewed what it took. The init speaks RFC 2131 itself on
# a kernel UDP socket bound to the interface, and sets the lease through rtnetlink: the
# address's lifetime is the lease's, so the kernel drops an address nobody renewed.

DHCP_DISCOVER, DHCP_OFFER, DHCP_REQUEST, DHCP_ACK, DHCP_NAK = 1, 2, 3, 5, 6
DHCP_COOKIE = b"\x63\x82\x53\x63"
# Asked for: mask, routers, DNS, domain, broadcast, lease time, server, T1, T2.
DHCP_WANTED = bytes([1, 3, 6, 15, 28, 51, 54, 58, 59])
DHCP_SERVER_PORT, DHCP_CLIENT_PORT = 67, 68
DHCP_BOOT_TRIES, DHCP_BOOT_WAIT = 5, 1.0  # at boot, as `udhcpc -t 5 -T 1`: five DISCOVERs, 1 s
DHCP_RETRY_MIN = 60.0  # RFC 2131 4.4.5: a RENEW or REBIND is sent again at most once a minute
DHCP_DISCOVER_MAX = 64.0  # without a lease: DISCOVERs 4, 8, ... 64 s apart (RFC 2131 4.1)
NO_ADDR = b"\0\0\0\0"
RESOLV_CONF = "/etc/resolv.conf"  # a lease's DNS servers; config: network.resolv_conf
FOREVER = 0xFFFFFFFF  # a lease time of all ones: infinite
# rtnetlink (linux/rtnetlink.h, if_addr.h): host byte order, the same numbers on every arch.
RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE, NLMSG_ERROR = 20, 21, 24, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_CACHEINFO = 1, 2, 4, 6
RTA_OIF, RTA_GATEWAY = 4, 5
RT_TABLE_MAIN, RTPROT_DHCP, RTN_UNICAST, AF_INET = 254, 16, 1, 2


def _u32(n):
    return n.to_bytes(4, sys.byteorder)


def _rtattr(kind, data):
    size = 4 + len(data)  # struct rtattr: length, type, the data padded to 4 bytes
    head = size.to_bytes(2, sys.byteorder) + kind.to_bytes(2, sys.byteorder)
    return head + data + bytes(-size % 4)


def rtnetlink(kind, flags, body):
    """One rtnetlink request and its ack; OSError with the kernel's errno when it is refused."""
    import _socket
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, 0)
    try:
        sock.bind((0, 0))
        flags |= NLM_F_REQUEST | NLM_F_ACK
        head = _u32(16 + len(body)) + kind.to_bytes(2, sys.byteorder)
        sock.send(head + flags.to_bytes(2, sys.byteorder) + _u32(1) + _u32(0) + body)
        while True:
            reply = sock.recv(65536)
            if int.from_bytes(reply[4:6], sys.byteorder) == NLMSG_ERROR:
                err = -int.from_bytes(reply[16:20], sys.byteorder, signed=True)
                if err:
                    raise OSError(err, os.strerror(err))
                return
    finally:
        sock.close()


def ipv4_address(ifindex, ip, prefix, broadcast=None, lifetime=None, delete=False):
    """Add (or replace, or delete) an IPv4 address; with `lifetime` the kernel removes it then."""
    body = bytes([AF_INET, prefix, 0, 0]) + _u32(ifindex)
    body += _rtattr(IFA_LOCAL, ip) + _rtattr(IFA_ADDRESS, ip)
    if broadcast:
        body += _rtattr(IFA_BROADCAST, broadcast)
    if lifetime is not None:  # struct ifa_cacheinfo: preferred, valid, two stamps
        body += _rtattr(IFA_CACHEINFO, _u32(lifetime) * 2 + bytes(8))
    if delete:
        rtnetlink(RTM_DELADDR, 0, body)
    else:
        rtnetlink(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, body)


def ipv4_default_route(ifindex, gateway):
    """`ip route replace default via GATEWAY dev IFINDEX proto dhcp`."""
    body = bytes([AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_DHCP, 0, RTN_UNICAST]) + _u32(0)
    body += _rtattr(RTA_GATEWAY, gateway) + _rtattr(RTA_OIF, _u32(ifindex))
    rtnetlink(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body)


def dotted(addr):
    return ".".join(str(b) for b in addr)


def _addresses(data):
    return [data[i:i + 4] for i in range(0, len(data) - 3, 4)]


class DhcpClient:
    """One interface's DHCP lease (RFC 2131), kept by the init.

    At boot acquire() waits for a lease as `udhcpc -n -q -t 5 -T 1` did. Then the supervisor's
    loop calls tick() at `due` (and when SIGIO says an answer came): at T1 a REQUEST goes to
    the server (RENEWING), at T2 to everyone (REBINDING), each sent again at half the time
    left, and once the lease has run out (the kernel has dropped the address) or a NAK came,
    DISCOVERs begin again. The socket is a kernel UDP one bound to the interface; requests
    set the BROADCAST flag while there is no address, so that the answers reach it (RFC 2131
    4.1: a client that cannot take unicast before it is configured asks for broadcast).
    """

    def __init__(self, name, hostname=None, resolv_conf=RESOLV_CONF):
        import _socket
        self.so, self.name, self.resolv_conf = _socket, name, resolv_conf
        self.hostname = (hostname or "").encode()[:63]
        with open("/sys/class/net/%s/address" % name) as f:
            self.mac = bytes(int(x, 16) for x in f.read().strip().split(":"))
        self.ifindex = _socket.if_nametoindex(name)
        self.sock = None
        self.xid = NO_ADDR
        self.state = "init"  # init, selecting, requesting, bound, renewing, rebinding
        self.lease = None  # what is set: ip, prefix, routers, dns, server, and its times
        self.offer = None  # (address offered, server) while requesting
        self.due = time.monotonic()
        self.tries = 0

    # -- packets

    def open(self):
        if self.sock is None:
            so = self.so
            sock = so.socket(so.AF_INET, so.SOCK_DGRAM)
            sock.setsockopt(so.SOL_SOCKET, so.SO_REUSEADDR, 1)
            sock.setsockopt(so.SOL_SOCKET, so.SO_BROADCAST, 1)
            bind_to_device = getattr(so, "SO_BINDTODEVICE", 25)  # 25 on every Linux we run on
            sock.setsockopt(so.SOL_SOCKET, bind_to_device, self.name.encode())
            sock.bind(("0.0.0.0", DHCP_CLIENT_PORT))
            self.sock = sock
        return self.sock

    def packet(self, kind, ciaddr=NO_ADDR, requested=None, server=None):
        """A BOOTREQUEST: op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr,
        giaddr, chaddr, sname, file, the cookie and the options, padded to BOOTP's 300 bytes."""
        flags = b"\x80\0" if ciaddr == NO_ADDR else b"\0\0"
        head = bytes([1, 1, 6, 0]) + self.xid + b"\0\0" + flags + ciaddr + bytes(12)
        head += self.mac.ljust(16, b"\0") + bytes(192) + DHCP_COOKIE
        opts = [(53, bytes([kind])), (61, b"\x01" + self.mac), (55, DHCP_WANTED)]
        if self.hostname:
            opts.append((12, self.hostname))
        if requested:
            opts.append((50, requested))
        if server:
            opts.append((54, server))
        body = b"".join(bytes([code, len(value)]) + value for code, value in opts)
        return (head + body + b"\xff").ljust(300, b"\0")

    def parse(self, data):
        """(message type, yiaddr, options) of an answer to our xid and MAC, else None."""
        if (len(data) < 240 or data[0] != 2 or data[4:8] != self.xid
                or data[28:28 + len(self.mac)] != self.mac or data[236:240] != DHCP_COOKIE):
            return None
        opts, i = {}, 240
        while i + 1 < len(data) and data[i] != 255:
            if data[i] == 0:
                i += 1
                continue
            n = data[i + 1]  # a long option comes in parts, to be joined (RFC 3396)
            opts[data[i]] = opts.get(data[i], b"") + data[i + 2:i + 2 + n]
            i += 2 + n
        kind = opts.get(53, b"\0")[0]
        return kind, data[16:20], opts

    def send(self, kind, to="255.255.255.255"):
        ciaddr = self.lease["ip"] if self.state in ("renewing", "rebinding") else NO_ADDR
        requested = server = None
        if self.state == "requesting":
            requested, server = self.offer
        self.open().sendto(self.packet(kind, ciaddr, requested, server), (to, DHCP_SERVER_PORT))

    # -- the exchange

    def start(self):
        """DISCOVER. A new transaction id only for a new search: an answer to an earlier
        DISCOVER of the same search is taken (a server that first pings the address, as
        dnsmasq does, answers ~3 s late)."""
        if self.state not in ("selecting", "requesting"):
            self.xid = os.urandom(4)
        self.state, self.offer = "selecting", None
        self.send(DHCP_DISCOVER)

    def answer(self, data, now):
        """Act on one datagram; True when it bound (or renewed) a lease."""
        got = self.parse(data)
        if got is None:
            return False
        kind, yiaddr, opts = got
        if kind == DHCP_OFFER and self.state == "selecting" and yiaddr != NO_ADDR:
            self.offer = (yiaddr, opts.get(54, b"")[:4] or None)
            self.state = "requesting"
            self.send(DHCP_REQUEST)
            self.due = now + 4.0
        elif kind == DHCP_ACK and self.state in ("requesting", "renewing", "rebinding"):
            self.bind(yiaddr, opts, now)
            return True
        elif kind == DHCP_NAK and self.state in ("requesting", "renewing", "rebinding"):
            say("%s: the DHCP server refused the lease (NAK): asking again" % self.name)
            self.drop()
            self.state, self.due, self.tries = "init", now, 0
        return False

    def receive(self, now, wait=0.0):
        """Read what has come (waiting up to `wait` s for the first); True if a lease bound."""
        sock = self.sock
        if sock is None:
            return False
        sock.settimeout(wait)
        try:
            while True:
                data = sock.recv(2048)
                sock.settimeout(0.0)
                if self.answer(data, now):
                    return True
        except OSError:  # timeout, or nothing more to read
            return False

    def acquire(self, tries=DHCP_BOOT_TRIES, wait=DHCP_BOOT_WAIT):
        """At boot: a lease within `tries` DISCOVERs `wait` s apart; False if none came (the
        loop goes on asking, with tick())."""
        for _ in range(tries):
            self.start()
            end, extended = time.monotonic() + wait, False
            while True:
                left = end - time.monotonic()
                if left <= 0 and self.state == "requesting" and not extended:
                    end, extended = end + wait, True  # a late offer: its REQUEST gets a wait too
                    continue
                if left <= 0:
                    break
                if self.receive(time.monotonic(), left):
                    return True
        self.state, self.due = "init", time.monotonic() + 4.0
        return False

    def bind(self, ip, opts, now):
        """Set the lease: address (lifetime: the lease), default route, resolv.conf."""
        mask = opts.get(1, b"")[:4]
        prefix = bin(int.from_bytes(mask, "big")).count("1") if len(mask) == 4 else 24
        seconds = int.from_bytes(opts[51][:4], "big") if len(opts.get(51, b"")) >= 4 else FOREVER
        t1 = int.from_bytes(opts[58][:4], "big") if len(opts.get(58, b"")) >= 4 else seconds // 2
        t2 = (int.from_bytes(opts[59][:4], "big") if len(opts.get(59, b"")) >= 4
              else seconds * 7 // 8)
        old = self.lease
        if old and old["ip"] != ip:  # a new address: the old one goes
            ipv4_address(self.ifindex, old["ip"], old["prefix"], delete=True)
        lifetime = None if seconds == FOREVER else seconds
        host_bits = (1 << (32 - prefix)) - 1  # no broadcast option: the subnet's, as `brd +`
        subnet_broadcast = (int.from_bytes(ip, "big") | host_bits).to_bytes(4, "big")
        broadcast = opts.get(28, b"")[:4] or subnet_broadcast
        ipv4_address(self.ifindex, ip, prefix, broadcast, lifetime)
        routers, dns = _addresses(opts.get(3, b"")), _addresses(opts.get(6, b""))
        if routers:
            ipv4_default_route(self.ifindex, routers[0])
        domain = opts.get(15, b"").rstrip(b"\0").decode("ascii", "replace")
        if dns and self.resolv_conf and (not old or (dns, domain) != (old["dns"], old["domain"])):
            text = "".join("nameserver %s\n" % dotted(a) for a in dns)
            text = ("search %s\n" % domain if domain else "") + text
            write_file(self.resolv_conf, text.encode())
        server = opts.get(54, b"")[:4] or (old or {}).get("server")
        self.lease = {"ip": ip, "prefix": prefix, "routers": routers, "dns": dns,
                      "domain": domain, "server": server, "seconds": seconds,
                      "t1": now + t1, "t2": now + t2, "end": now + seconds}
        renewed = self.state in ("renewing", "rebinding") and old and old["ip"] == ip
        self.state, self.tries = "bound", 0
        self.due = float("inf") if seconds == FOREVER else now + t1
        say("%s: %s %s/%d from %s%s%s, %s" % (
            self.name, "lease renewed:" if renewed else "lease of", dotted(ip), prefix,
            dotted(server) if server else "?",
            ", router " + dotted(routers[0]) if routers else "",
            ", dns " + " ".join(dotted(a) for a in dns) if dns else "",
            "no expiry" if seconds == FOREVER else "%d s" % seconds))

    def drop(self):
        """The lease is gone (NAK, or run out): its address goes too."""
        if self.lease:
            try:
                ipv4_address(self.ifindex, self.lease["ip"], self.lease["prefix"], delete=True)
            except OSError:
                pass  # the kernel dropped it already at its lifetime's end
            self.lease = None

    def watch(self):
        """After boot: a non-blocking socket that raises SIGIO when an answer comes."""
        sock = self.open()
        sock.settimeout(0.0)
        try:
            fcntl.fcntl(sock.fileno(), fcntl.F_SETOWN, os.getpid())
            flags = fcntl.fcntl(sock.fileno(), fcntl.F_GETFL)
            fcntl.fcntl(sock.fileno(), fcntl.F_SETFL, flags | os.O_ASYNC)
        except Exception:
            pass  # no SIGIO: answers are read at the next due time
        if self.state == "init":
            self.due = time.monotonic()

    def tick(self, now):
        """Read answers, then do what is due: renew, rebind, or discover again."""
        self.receive(now)
        if now < self.due:
            return
        lease = self.lease
        if self.state in ("bound", "renewing") and lease and now >= lease["t2"]:
            self.state = "rebinding"
        elif self.state == "bound":
            self.state = "renewing"
        if self.state in ("renewing", "rebinding") and now >= lease["end"]:
            say("%s: the lease of %s ran out: asking again" % (self.name, dotted(lease["ip"])))
            self.drop()
            self.state, self.tries = "init", 0
        if self.state in ("renewing", "rebinding"):
            self.xid = os.urandom(4)  # a new exchange (a minute or more after the last)
        if self.state == "renewing":
            self.send(DHCP_REQUEST, to=dotted(lease["server"]) if lease["server"]
                      else "255.255.255.255")
            self.due = now + max(DHCP_RETRY_MIN, (lease["t2"] - now) / 2)
            self.due = min(self.due, lease["t2"])
        elif self.state == "rebinding":
            self.send(DHCP_REQUEST)
            self.due = min(now + max(DHCP_RETRY_MIN, (lease["end"] - now) / 2), lease["end"])
        else:  # init, selecting, or a request that went unanswered
            self.start()
            self.due = now + min(DHCP_DISCOVER_MAX, 4.0 * 2 ** min(self.tries, 4))
            self.tries += 1



def module_name(path):
    """The kernel's name of a module file: kernel/net/8021q/8021q.ko -> 8021q (- becomes _)."""
    return path.strip().rsplit("/", 1)[-1].split(".ko", 1)[0].replace("-", "_")


def insert_modules(argvs):
    """Load modules ([NAME, ARG...] each) with init_module(2), their dependencies first, as
    modules.dep orders them: a modprobe run costs ~50 ms of an emulated board's boot. Return
    the ones left for modprobe: names modules.dep does not have (aliases), compressed files."""
    base = "/lib/modules/" + os.uname().release
    index = {}
    if _ctypes is None:
        return argvs
    try:
        with open(base + "/modules.dep") as f:
            for line in f:
                path, _, deps = line.partition(":")
                index[module_name(path)] = [path] + deps.split()  # loaded from the last dep
        with open(base + "/modules.builtin") as f:
            builtin = {module_name(line) for line in f}
    except OSError:
        return argvs
    left, loaded = [], set()
    for words in argvs:
        name = words[0].replace("-", "_")
        if name in builtin:
            continue
        paths = index.get(name)
        if not paths or not all(p.endswith(".ko") for p in paths):
            left.append(words)
            continue
        for path in reversed(paths):  # dependencies, then the module with its arguments
            if path in loaded or os.path.isdir("/sys/module/" + module_name(path)):
                continue  # loaded by an earlier call, or by the kernel (request_module)
            loaded.add(path)
            args = " ".join(words[1:]) if path == paths[0] else ""
            with open(base + "/" + path, "rb") as f:
                image = f.read()
            try:
                libc_call("init_module", image, c_ulong(len(image)), args.encode())
            except OSError as e:
                if e.errno != errno.EEXIST:  # loaded meanwhile: as modprobe, not an error
                    say("cannot load module %s: %s (the kernel log says why)"
                        % (path.rsplit("/", 1)[-1], os.strerror(e.errno)))
    return left


def unmount_all():
    for source, target, _ in reversed(mountpoints()):
        if not source.startswith("/dev/"):  # only disks need a clean unmount
            continue
        try:
            libc_call("umount2", target.encode(), 0)
        except OSError:  # busy (often /): make it read-only so the disk is clean
            flags = MS_REMOUNT | MS_RDONLY
            step("remounting %s read-only" % target, mount, None, target, None, flags)


def finish(rt, action, status, idle):
    """The end, once every process is gone: the init's exit status, or on a device reboot(2)
    and `idle()` for ever (PID 1 must not exit: the kernel would panic)."""
    # Only a device's disks need it: the page cache outlives a container, and there sync(2)
    # flushes every filesystem of the host (300 MB dirty made lxc-stop take 0.3 s).
    if rt.mode == "device":
        os.sync()
    if not rt.pid1:
        if action == EXIT:
            say("exiting with the main service's status %d" % status)
        else:
            say("would %s now, but not PID 1: exiting" % action)
        console().drain()
        return status
    if rt.mode == "device":
        step("unmounting", unmount_all)
        if action == EXIT:
            action = POWEROFF  # a device has no one to hand an exit status to
    elif action == EXIT or rt.flavour != "lxc":
        # OCI runtimes want PID 1 to exit, not to call reboot(2); so does an app that ended.
        say("container stopped, exit status %d" % status)
        console().drain()
        return status
    say(action)
    console().drain()
    # In a PID namespace reboot(2) kills us with SIGINT (halt) or SIGHUP (reboot): LXC's cue.
    if action != REBOOT:  # halted or off: nobody is left to feed it
        WATCHDOG.disarm()
    step("reboot(2)", libc_call, "reboot", c_int(RB[action]) if c_int else 0)
    if rt.mode == "container":
        return status
    while True:
        idle()


# -- the supervisor: services, reaping, logs, shutdown ---------------------------------------


class Service:
    """One supervised service: a command, or an LXC container (`lxc-start -F`, whose monitor
    is the service's process: no resident process of ours per container).

    Readiness and health come from a probe: `ready_file` (inside the container for one),
    `health_command` (exit 0 within `health_timeout`), or, for a container with neither, its
    init running. A service without a probe is ready once started (a oneshot: once done).
    """

    TYPES = ("oneshot", "simple", "respawn")

    def __init__(self, spec, cfg):
        if not isinstance(spec, dict):
            raise ValueError("a service must be an object")
        self.name = name = spec.get("name")
        ok = isinstance(name, str) and name[:1].isalnum()  # it names a log file
        if not ok or not all(c.isalnum() or c in "._@-" for c in name):
            raise ValueError("bad service name %r" % (name,))
        self.container = spec.get("container")
        if self.container is not None and not isinstance(self.container, dict):
            self.container = {"name": str(self.container)}
        self.command = spec.get("command")
        if self.container:
            self.command = ["lxc-start", "-F", "-n", str(self.container["name"])]
            if self.container.get("path"):
                self.command += ["-P", str(self.container["path"])]
        if isinstance(self.command, str):
            self.command = ["/bin/sh", "-c", self.command]
        if not self.command or not all(isinstance(a, str) for a in self.command):
            raise ValueError("%s: command must be a non-empty list of strings" % self.name)
        self.type = spec.get("type", "respawn" if self.container else "simple")
        if self.type not in self.TYPES:
            raise ValueError("%s: type must be one of %s" % (self.name, ", ".join(self.TYPES)))
        # The main service is the app (`docker --init`, tini): its end is the init's end.
        self.main = bool(spec.get("main", False))
        if self.main and self.type == "respawn":
            say("%s: a main service is not respawned: its exit ends the init" % name)
            self.type = "simple"
        self.after = names_list(spec.get("after", []))
        self.requires = names_list(spec.get("requires", []))
        self.env = {str(k): str(v) for k, v in spec.get("environment", {}).items()}
        self.workdir = spec.get("workdir")
        self.user = spec.get("user")
        self.console = bool(spec.get("console", False))
        # Where its output goes: "console" (and its log), or "log" only (an LXC monitor's
        # chatter, e.g. when lxc-attach asks it for config keys, is no console material).
        self.output = spec.get("output") or ("log" if self.container else "console")
        grace = spec.get("stop_timeout", cfg["shutdown_grace"])
        self.stop_timeout = seconds(grace, name + ": stop_timeout")
        # A container stops on its halt signal (lxc.signal.halt), sent to its init.
        self.stop_signal = SIGNAL_NUMBERS.get(spec.get("stop_signal") or "SIGPWR", signal.SIGPWR)
        self.respawn = dict(RESPAWN, **(CONTAINER_RESPAWN if self.container else {}))
        self.respawn.update(cfg["respawn"])
        self.respawn.update(spec.get("respawn", {}))
        for key in RESPAWN:
            self.respawn[key] = seconds(self.respawn[key], "%s: respawn %s" % (name, key))
        self.ready_file = spec.get("ready_file")
        health = spec.get("health_command")
        if isinstance(health, str):  # a plain command runs without a shell: one exec less
            plain = not any(c in health for c in "$|&;<>()`'\"*?[]#~=%\\\n")
            health = health.split() if plain else ["/bin/sh", "-c", health]
        self.health_command = health
        self.probe = {}
        for key, default in PROBE_DEFAULTS.items():
            self.probe[key] = seconds(spec.get(key, default), "%s: %s" % (name, key))
        self.probed = bool(self.ready_file or self.health_command or self.container)
        self.state = "pending"  # pending, running, waiting (to respawn), done, failed, stopped
        self.pid = None
        self.starts = []
        self.started_at = 0.0
        self.restart_at = 0.0
        self.delay = self.respawn["delay"]
        self.log_fd = None
        self.log_size = 0
        self.ready = False  # its probe passed since it last started
        self.gave_up = False  # an attempt ended before it was ready: `after` waits no more
        self.restarts = 0
        self.unhealthy_since = None
        self.next_probe = 0.0
        self.probe_pid = None  # a health_command run under way, and when it began
        self.probe_began = 0.0
        self.killing = None  # why it is being killed (a restart), or None
        self.cinit = None  # a container's init, as seen from here
        self.delay_used = 0.0  # the last respawn delay
        self.ready_at = 0.0

    @property
    def deps(self):
        return self.after + [r for r in self.requires if r not in self.after]


def names_list(value):
    return [value] if isinstance(value, str) else [str(a) for a in value]


def order_services(services):
    """Order services after their `after` and `requires` names; a cycle is reported and
    broken, never fatal."""
    by_name = {s.name: s for s in services}
    for s in services:
        for key in ("after", "requires"):
            unknown = [a for a in getattr(s, key) if a not in by_name]
            if unknown:
                say("%s: ignoring unknown %r %s" % (s.name, key, ", ".join(unknown)))
                setattr(s, key, [a for a in getattr(s, key) if a in by_name])
    placed, order, pending = set(), [], list(services)
    while pending:
        ready = [s for s in pending if all(a in placed for a in s.deps)]
        if ready:
            s = ready[0]
        else:  # walk unplaced dependencies from the first pending service until one repeats
            s, seen = pending[0], []
            while s not in seen:
                seen.append(s)
                s = by_name[next(a for a in s.deps if a not in placed)]
            cycle = seen[seen.index(s) :]
            names = " -> ".join(c.name for c in cycle)
            say("ordering cycle %s: starting %s first" % (names, s.name))
            s.after = [a for a in s.after if a in placed]
            s.requires = [a for a in s.requires if a in placed]
        pending.remove(s)
        placed.add(s.name)
        order.append(s)
    return order



class ServiceOutput:
    """Copies each service's output, a line at a time, to the console (as `[NAME] line`) and
    to its log file, NAME.log in log_dir, kept under log_max_bytes with one older file."""

    def __init__(self, cfg, console):
        self.cfg, self.console = cfg, console
        self.streams = {}  # pipe fd -> [service, its last line so far]
        self.more = False  # a pipe had more than one pass reads: come back at once
        self.polling = False  # no SIGIO for some pipe: the loop must poll

    def watch(self, fd, svc):
        """Read a service's output without polling: the kernel sends SIGIO when it writes."""
        try:
            fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
            fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK | os.O_ASYNC)
        except Exception:
            os.set_blocking(fd, False)
            self.polling = True  # no SIGIO: the loop polls the pipes
        self.streams[fd] = [svc, b""]

    def drain(self):
        """Read what the pipes hold (a bounded amount per pass) and pass on whole lines."""
        self.more = False
        for fd in list(self.streams):
            svc, buf = self.streams[fd]
            closed = False
            for _ in range(16):  # bounded, so a chatty service cannot starve the loop
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    chunk = b""
                if not chunk:
                    closed = True
                    break
                buf += chunk
            else:
                self.more = True
            lines = buf.split(b"\n")
            buf = lines.pop()
            if buf and (closed or len(buf) > 4096):
                lines.append(buf)  # a last line without a newline, or a very long one
                buf = b""
            if lines:
                self.emit(svc, lines)
            if closed:
                os.close(fd)
                del self.streams[fd]
            else:
                self.streams[fd][1] = buf

    def emit(self, svc, lines):
        """Lines of a service's output to the console (prefixed with its name) and its log."""
        if svc.output != "log":
            prefix = b"[" + svc.name.encode() + b"] "
            self.console.write(prefix + (b"\n" + prefix).join(lines) + b"\n")
        if self.cfg["log_dir"]:
            try:
                self.log(svc, b"\n".join(lines) + b"\n")
            except OSError as e:
                say("logging to %s disabled: %s" % (self.cfg["log_dir"], e))
                self.cfg["log_dir"] = None

    def log(self, svc, data):
        """Append whole lines to NAME.log; when it would pass log_max_bytes, it becomes
        NAME.log.1 (one older file kept) and a new NAME.log is begun."""
        log_dir, cap = self.cfg["log_dir"], max(1, int(self.cfg["log_max_bytes"]))
        path = os.path.join(log_dir, svc.name + ".log")
        while data:
            if svc.log_fd is None:
                os.makedirs(log_dir, exist_ok=True)
                svc.log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                svc.log_size = os.fstat(svc.log_fd).st_size
            room = cap - svc.log_size
            cut = len(data) if len(data) <= room else data.rfind(b"\n", 0, max(room, 0)) + 1
            if cut == 0 and svc.log_size == 0:  # one line longer than the cap: its start only
                end = data.find(b"\n") + 1 or len(data)
                svc.log_size += os.write(svc.log_fd, data[: min(end, cap)])
                data = data[end:]
                continue
            if cut:
                svc.log_size += os.write(svc.log_fd, data[:cut])
                data = data[cut:]
            if data:  # full: keep one older file, NAME.log.1
                os.close(svc.log_fd)
                svc.log_fd = None
                os.replace(path, path + ".1")

    def close_logs(self, services):
        for svc in services:
            if svc.log_fd is not None:
                os.close(svc.log_fd)
                svc.log_fd = None


class Health:
    """Readiness and health of the supervisor's services, and of the device as a whole.

    Probes run from the main loop when due: the in-process part (a container's init found
    under its lxc-start monitor, a ready file) costs microseconds; a health_command runs as a
    child, judged when it is reaped. A service not ready within ready_timeout, or unhealthy for
    unhealthy_after, is killed and (if it respawns) started again with backoff. The device is
    healthy when boot is over and every service is ready: health_file says so per service, and
    healthy_file exists exactly then (the firmware's "mark good" reads it).
    """

    def __init__(self, sup):
        self.sup = sup
        self.probes = {}  # health_command pid -> service
        self.healthy = None
        self.text = None
        self.own_pidns = None

    def container_init(self, svc):
        """A container's init: the child of its lxc-start monitor in another PID namespace
        (the monitor's other children are its hooks)."""
        if svc.cinit is not None and os.path.exists("/proc/%d" % svc.cinit):
            return svc.cinit
        svc.cinit = None
        if svc.pid is None:
            return None
        if self.own_pidns is None:
            self.own_pidns = os.readlink("/proc/self/ns/pid")
        try:
            tasks = os.listdir("/proc/%d/task" % svc.pid)
        except OSError:
            return None
        for tid in tasks:
            try:
                with open("/proc/%d/task/%s/children" % (svc.pid, tid)) as f:
                    kids = f.read().split()
            except OSError:
                continue
            for kid in kids:
                try:
                    if os.readlink("/proc/%s/ns/pid" % kid) != self.own_pidns:
                        svc.cinit = int(kid)
                        return svc.cinit
                except OSError:
                    continue
        return None

    def passes(self, svc):
        """The in-process part of a probe: the container's init is there, the ready file too."""
        root = ""
        if svc.container:
            cinit = self.container_init(svc)
            if cinit is None:
                return False
            root = "/proc/%d/root" % cinit
            try:  # still our root: LXC is setting it up (and our own ready file is there)
                st, own = os.stat(root), os.stat("/")
                if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
                    return False
            except OSError:
                return False
        if svc.ready_file:
            return os.path.exists(root + svc.ready_file)
        return True

    def probe_due(self):
        now = time.monotonic()
        for svc in self.sup.order:
            if svc.state != "running" or not svc.probed or svc.killing:
                continue
            if svc.probe_pid is not None:
                if now - svc.probe_began >= svc.probe["health_timeout"]:
                    self.sup.signal_group(svc.probe_pid, signal.SIGKILL)  # judged when reaped
                elif not svc.ready:
                    self.check_start(svc, now)
                continue
            if now < svc.next_probe:
                continue
            ok = self.passes(svc)
            if ok and svc.health_command:
                self.run_probe(svc, now)
            else:
                self.judge(svc, ok, now, cheap=True)

    def run_probe(self, svc, now):
        pid = os.fork()
        if pid == 0:
            exec_child(svc.health_command, dict(os.environ), quiet=True)
        self.probes[pid] = svc
        svc.probe_pid, svc.probe_began = pid, now

    def probe_done(self, pid, status):
        svc = self.probes.pop(pid)
        if svc.probe_pid != pid:
            return  # a probe of an earlier run, killed when that run ended
        svc.probe_pid = None
        if svc.state == "running" and not svc.killing:
            self.judge(svc, status == 0, time.monotonic())

    def forget_probe(self, svc):
        """The service ended: a probe still running is killed and its result ignored."""
        if svc.probe_pid is not None:
            self.sup.signal_group(svc.probe_pid, signal.SIGKILL)
            svc.probe_pid = None

    def judge(self, svc, ok, now, cheap=False):
        """A probe's verdict; `cheap`: only its in-process part ran (and failed, if not ok)."""
        p = svc.probe
        if ok:
            if not svc.ready:
                self.became_ready(svc, now)
            elif svc.unhealthy_since is not None:
                say("%s: healthy again" % svc.name)
                TIMELINE.event(svc.name, "healthy")
            svc.unhealthy_since = None
            svc.next_probe = now + p["health_interval"]
            self.update()
        elif not svc.ready:
            # The in-process part is polled; a command that failed is tried again a bit later.
            svc.next_probe = now + (PROBE_POLL if cheap else 0.25)
            self.check_start(svc, now)
        else:
            if svc.unhealthy_since is None:
                svc.unhealthy_since = now
                say("%s: health probe failed" % svc.name)
                TIMELINE.event(svc.name, "unhealthy")
                self.update()
            elif now - svc.unhealthy_since >= p["unhealthy_after"] and svc.type == "respawn":
                self.restart(svc, "unhealthy for %gs" % p["unhealthy_after"])
                return
            svc.next_probe = now + min(p["health_interval"], max(0.5, p["unhealthy_after"] / 3))

    def check_start(self, svc, now):
        """A start that is not ready within ready_timeout failed: `after` waits no more; a
        respawning service is restarted."""
        limit = svc.probe["ready_timeout"]
        if not limit or now - svc.started_at < limit or svc.killing:
            return
        if not svc.gave_up:
            svc.gave_up = True
            self.update()
        if svc.type == "respawn":
            self.restart(svc, "not ready after %gs" % limit)

    def restart(self, svc, why):
        say("%s: %s, restarting" % (svc.name, why))
        svc.killing = why
        TIMELINE.event(svc.name, "kill")
        self.forget_probe(svc)
        if svc.pid is not None:
            self.sup.kill_service(svc, svc.pid)

    def became_ready(self, svc, now):
        svc.ready, svc.ready_at = True, now
        TIMELINE.event(svc.name, "ready", now)
        if svc.probed:
            say("%s: ready" % svc.name)

    def due_times(self):
        times = []
        for svc in self.sup.order:
            if svc.state != "running" or not svc.probed or svc.killing:
                continue
            if svc.probe_pid is not None:
                times.append(svc.probe_began + svc.probe["health_timeout"])
            else:
                times.append(svc.next_probe)
            if not svc.ready and svc.probe["ready_timeout"]:
                times.append(svc.started_at + svc.probe["ready_timeout"])
        return times

    def ok(self, svc):
        if svc.type == "oneshot" or svc.state == "done":
            return svc.state == "done"
        return svc.state == "running" and svc.ready and svc.unhealthy_since is None

    def update(self):
        """Write health_file when anything in it changed; keep healthy_file and say so on the
        console when the device's health changes."""
        sup, cfg = self.sup, self.sup.cfg
        bad = [svc.name for svc in sup.order if not self.ok(svc)]
        healthy = sup.ready and not bad and not sup.stopping
        rows = ", ".join(
            '"%s": {"state": "%s", "ready": %s, "healthy": %s, "restarts": %d}'
            % (svc.name, svc.state, "true" if svc.ready else "false",
               "true" if self.ok(svc) else "false", svc.restarts)
            for svc in sup.order)
        text = ('{"healthy": %s, "booted": %s, "stopping": %s, "unhealthy": [%s], '
                '"services": {%s}}\n') % (
            "true" if healthy else "false", "true" if sup.ready else "false",
            "true" if sup.stopping else "false",
            ", ".join('"%s"' % n for n in bad), rows)
        if text != self.text and cfg["health_file"]:
            self.text = text
            write_file(cfg["health_file"], text.encode())
        if healthy == self.healthy:
            return
        was, self.healthy = self.healthy, healthy
        if healthy or was:
            TIMELINE.event("init", "healthy" if healthy else "unhealthy")
        if cfg["healthy_file"]:
            if healthy:
                write_file(cfg["healthy_file"], b"")
            else:
                step("removing " + cfg["healthy_file"], os.unlink, cfg["healthy_file"],
                     quiet=True)
        if healthy:
            say("healthy")
            sup.firmware_healthy()
        elif was and not sup.stopping:
            say("unhealthy: %s" % ", ".join(bad))


def write_file(path, data):
    """Replace `path` whole (a reader never sees half of it)."""
    try:
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        say("cannot write %s: %s" % (path, e))


class Supervisor:
    """Starts the services in order, reaps every child (adopted orphans too), has their output
    copied (ServiceOutput), respawns, and stops everything at the end.

    Signals are taken synchronously in pump(); loop() runs until one of them, or the end of
    the main service, chooses an action.
    """

    def __init__(self, runtime, cfg, config_error=None):
        self.rt, self.cfg, self.config_error = runtime, cfg, config_error
        self.console = console()
        self.services, self.order, self.started = {}, [], []
        self.output = ServiceOutput(cfg, self.console)
        self.pids = {}
        self.action, self.stopping, self.ready = None, False, False
        self.main_status = None  # the main service's exit status, once it has ended
        self.errors = {}  # error text -> when it was last reported
        self.health = Health(self)
        self.trial_deadline, self.marked_good = None, False
        self.leases = []  # DhcpClient: each renews its lease from the loop

    # -- firmware: a slot booted on trial must get healthy in time; a healthy one is marked good

    def start_trial(self):
        fw = self.cfg["firmware"]
        if fw and self.rt.mode == "device" and TRIAL_FLAG in kernel_cmdline():
            limit = seconds(fw.get("trial_timeout", 120), "trial_timeout")
            self.trial_deadline = time.monotonic() + limit
            say("booted on trial: healthy within %gs, or a reboot counts a failed attempt" % limit)

    def check_trial(self):
        if self.trial_deadline is not None and time.monotonic() >= self.trial_deadline:
            self.trial_deadline = None
            TIMELINE.event("init", "trial-failed")
            say("not healthy in time on trial: rebooting")
            self.action = REBOOT

    def firmware_healthy(self):
        """The device is healthy: the trial (if any) is over and the running slot is good."""
        self.trial_deadline = None
        fw = self.cfg["firmware"]
        if fw and fw.get("mark_good") and not self.marked_good and self.rt.mode == "device":
            self.marked_good = True
            pid = os.fork()
            if pid == 0:
                exec_child(fw["mark_good"], {"PATH": DEFAULT_PATH})

    # -- services

    def load_services(self):
        specs = self.cfg["services"]
        if self.rt.mode == "device" and (self.cfg["rescue_shell"] or self.config_error):
            if os.path.exists("/bin/sh"):
                say("offering a rescue shell on the console")
                rescue = {"name": "rescue-shell", "command": ["/bin/sh"], "type": "respawn"}
                specs = list(specs) + [dict(rescue, console=True)]
        services, main = [], None
        for spec in specs:
            try:
                svc = Service(spec, self.cfg)
                if svc.name in self.services:
                    raise ValueError("duplicate service %s" % svc.name)
                if svc.main and main:
                    say("%s: %s is the main service already" % (svc.name, main.name))
                    svc.main = False
                main = main or (svc if svc.main else None)
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
            self.output.watch(r, svc)
        return pid

    def start(self, svc):
        now = time.monotonic()
        svc.starts.append(now)
        svc.started_at = now
        if svc not in self.started:
            self.started.append(svc)
        else:
            svc.restarts += 1
        svc.ready, svc.cinit, svc.unhealthy_since, svc.killing = False, None, None, None
        svc.next_probe = now
        try:
            svc.pid = self.spawn(svc)
        except Exception as e:
            say("%s: cannot start: %s" % (svc.name, e))
            svc.state, svc.gave_up = "failed", True
            if svc.main:  # as if it could not be run: what a shell says for that
                self.ended(svc, 127 << 8)
            elif svc.type == "respawn":
                self.schedule_respawn(svc, now)
            self.health.update()
            return
        TIMELINE.event(svc.name, "restart" if svc.restarts else "start", now)
        svc.state = "running"
        self.pids[svc.pid] = svc
        if not svc.probed and svc.type != "oneshot":
            self.health.became_ready(svc, now)
        self.health.update()

    def settled(self, name, required=False):
        """Whether a service waiting on `name` may start: a oneshot once it has finished (for
        `requires`: successfully), a probed service once ready (for `after`: or once an
        attempt has failed), any other once started."""
        dep = self.services[name]
        if not required and self.blocked(dep):  # it will not start: `after` waits no more
            return True
        if dep.type == "oneshot":
            return dep.state == "done" if required else dep.state in ("done", "failed")
        if dep.probed:
            return dep.ready or (dep.gave_up and not required)
        return dep.state != "pending"

    def may_start(self, svc):
        return all(self.settled(a) for a in svc.after) and all(
            self.settled(r, True) for r in svc.requires)

    def blocked(self, svc, seen=()):
        """Pending on something it requires (directly or through what that requires) that
        failed: boot is over without it."""
        if svc.state != "pending" or svc.name in seen:
            return False
        for name in svc.requires:
            dep = self.services[name]
            if dep.gave_up or dep.state == "failed" or self.blocked(dep, seen + (svc.name,)):
                return True
        return False

    def start_due(self):
        now = time.monotonic()
        for svc in self.order:
            if self.action is not None:
                return
            if svc.state == "pending" and self.may_start(svc):
                self.start(svc)
            elif svc.state == "waiting" and now >= svc.restart_at:
                self.start(svc)
        if not self.ready and all(self.settled(s.name) or self.blocked(s) for s in self.order):
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
        TIMELINE.event("init", "ready")
        self.console.write(b"lxembed-init: ready\n")
        self.health.update()

    def schedule_respawn(self, svc, now):
        rs = svc.respawn
        if svc.ready_at >= svc.started_at and now - svc.ready_at >= rs["interval"]:
            svc.delay = rs["delay"]  # it ran well for a while: start the backoff again
        svc.starts = [t for t in svc.starts if now - t < rs["interval"]]
        if len(svc.starts) >= rs["burst"]:
            delay = rs["throttle"]
            say("%s: respawning too fast (%d starts in %gs): throttled for %gs"
                % (svc.name, len(svc.starts), rs["interval"], delay))  # fmt: skip
        else:
            delay, svc.delay = svc.delay, min(svc.delay * 2, rs["max_delay"])
        svc.state, svc.restart_at, svc.delay_used = "waiting", now + delay, delay

    def exited(self, svc, status):
        svc.pid = None
        how = describe(status)
        if svc.probed and not svc.ready:
            svc.gave_up = True  # services `after` it wait no more
        svc.ready, svc.cinit = False, None
        TIMELINE.event(svc.name, "exit")
        self.health.forget_probe(svc)
        if svc.main and self.main_status is None:
            self.main_status = exit_status(status)
        if self.stopping:
            svc.state = "stopped"
            say("%s: stopped (%s)" % (svc.name, how))
        elif svc.main:
            svc.state = "done" if status == 0 else "failed"
            self.ended(svc, status)
        elif svc.type == "respawn":
            self.schedule_respawn(svc, time.monotonic())
            if svc.container:  # lxc-start's status, not its init's (not our child)
                how = svc.killing or "container stopped (lxc-start: %s)" % how
                say("%s: %s, respawning in %gs" % (svc.name, how, svc.delay_used))
            else:
                say("%s: %s, respawning" % (svc.name, how))
        else:
            svc.state = "done" if status == 0 else "failed"
            if status or svc.type == "simple":
                say("%s: %s" % (svc.name, how))
            if svc.state == "done" and svc.type == "oneshot":
                self.health.became_ready(svc, time.monotonic())
        self.health.update()

    def ended(self, svc, status):
        """The main service ended: stop the rest, then exit with its status."""
        if self.main_status is None:
            self.main_status = exit_status(status)
        say("%s: %s: the main service ended" % (svc.name, describe(status)))
        if self.action is None:
            self.action = EXIT

    # -- reaping, output and signals

    def reap(self):
        """Reap every exited child, adopted orphans included; return False when none are left."""
        exits, left = reap_children()
        for pid, status in exits:
            if pid in self.health.probes:
                self.guard("probe result", self.health.probe_done, pid, status)
        exits = [(self.pids.pop(pid), status) for pid, status in exits if pid in self.pids]
        # After reaping: a service's last words come before its exit report.
        self.guard("copying output", self.output.drain)
        for svc, status in exits:
            self.guard("%s: handling its exit" % svc.name, self.exited, svc, status)
        return left

    def pump(self, timeout):
        """Wait up to `timeout` for a signal, then reap, copy output and act on the signals."""
        if self.output.more:
            timeout = 0.0
        elif self.console.pending:  # the console may take more soon: come back to it
            timeout = min(timeout, 0.05)
        got = self.rt.wait(min(timeout, self.wait_cap))
        self.reap()
        self.console.flush()
        self.act_on(got)

    @property
    def wait_cap(self):
        """The longest wait for a signal: SIGIO says when a pipe has output, unless polling."""
        return 0.1 if self.output.polling else 5.0

    def bare_pump(self):
        """pump() without service output: what is left when pump() itself failed."""
        got = self.rt.wait(0.1)
        for pid, _ in reap_children()[0]:
            svc = self.pids.pop(pid, None)
            if svc is not None:
                svc.pid, svc.state = None, "failed"
        self.act_on(got)

    def act_on(self, signals):
        for sig in signals:
            action = self.rt.table.get(sig)
            if action and self.action is None:
                say("%s: %s" % (signame(sig), action))
                self.action = action
            elif not action and sig not in (signal.SIGCHLD, signal.SIGIO):
                say("ignoring %s" % signame(sig))

    def guard(self, what, fn, *args):
        """Run one part of a pass; an error is reported (once in 10 s) and the pass goes on."""
        try:
            fn(*args)
            return True
        except Exception as e:
            text = "%s: %r" % (what, e)
            now = time.monotonic()
            if now - self.errors.get(text, -10.0) >= 10.0:
                self.errors[text] = now
                say("error %s" % text)
            return False

    def wait_for(self, done, timeout, poll=5.0):
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if not self.guard("waiting", self.pump, min(left, poll)):
                self.guard("reaping", self.bare_pump)
        return True

    def loop(self):
        """Start services when due and wait for signals and exits, until an action is chosen.

        An error in any part of a pass is reported and the next pass runs: reaping and signal
        handling never stop.
        """
        while self.action is None:
            # Probes first: a service they find ready lets its dependants start in this pass.
            self.guard("probing", self.health.probe_due)
            self.guard("starting services", self.start_due)
            self.guard("trial", self.check_trial)
            for client in self.leases:
                self.guard("DHCP on " + client.name, client.tick, time.monotonic())
            waits = [s.restart_at for s in self.order if s.state == "waiting"]
            waits += [client.due for client in self.leases]
            if self.trial_deadline is not None:
                waits.append(self.trial_deadline)
            waits += self.health.due_times()
            timeout = min(waits) - time.monotonic() if waits else self.wait_cap
            if not self.guard("waiting", self.pump, timeout):
                self.guard("reaping", self.bare_pump)

    # -- shutdown

    def shutdown(self):
        """Stop every service and every other process; return the init's exit status."""
        self.stopping = True
        # Health and ready file first: whoever reads the console's line below sees them.
        if self.cfg["ready_file"]:
            step("removing the ready file", os.unlink, self.cfg["ready_file"], quiet=True)
        self.guard("health", self.health.update)
        TIMELINE.event("init", "stopping")
        why = "the main service ended" if self.action == EXIT else self.action
        say("%s: stopping services" % why)
        # The main service first (its stop signal is the one a runtime sent the app), then the
        # rest in waves, dependants first: a service stops once nothing still running needs it;
        # the services of one wave stop together, each within its own stop_timeout.
        for svc in [s for s in self.started if s.main]:
            step("stopping " + svc.name, self.stop_wave, [svc])
        left = [s for s in reversed(self.started) if not s.main]
        while left:
            wave = [s for s in left if not any(s.name in o.deps for o in left)] or left[:1]
            step("stopping " + ", ".join(s.name for s in wave), self.stop_wave, wave)
            left = [s for s in left if s not in wave]
        step("stopping remaining processes", self.kill_rest)
        self.output.close_logs(self.order)
        return self.main_status or 0

    def stop_wave(self, wave):
        """Ask every running service of `wave` to stop; SIGKILL those past their stop_timeout."""
        start = time.monotonic()
        pending = [(svc, svc.pid) for svc in wave if svc.pid is not None]
        for svc, pid in pending:
            TIMELINE.event(svc.name, "stop")
            self.send_stop(svc, pid)
        killed = []
        while pending:
            deadline = min(start + svc.stop_timeout for svc, _ in pending)
            self.wait_for(lambda: any(svc.pid != pid for svc, pid in pending),
                          deadline - time.monotonic())
            now = time.monotonic()
            for svc, pid in list(pending):
                if svc.pid != pid:
                    pending.remove((svc, pid))
                elif now >= start + svc.stop_timeout:
                    say("%s: still running after %gs: SIGKILL" % (svc.name, svc.stop_timeout))
                    self.kill_service(svc, pid)
                    pending.remove((svc, pid))
                    killed.append((svc, pid))
        if killed:
            self.wait_for(lambda: all(svc.pid != pid for svc, pid in killed), 5.0)
            for svc, pid in killed:
                if svc.pid == pid:
                    self.signal_group(pid, signal.SIGKILL)

    def send_stop(self, svc, pid):
        """A container's halt signal goes to its init (what lxc-stop does); a service's
        SIGTERM to its process group."""
        if self.signal_container(svc, svc.stop_signal):
            return
        self.signal_group(pid, signal.SIGTERM)
        if svc.console:  # an interactive shell ignores SIGTERM; a hangup ends it
            self.signal_group(pid, signal.SIGHUP)

    def kill_service(self, svc, pid):
        """SIGKILL: a container's init (its PID namespace ends, and its lxc-start monitor
        cleans up and exits), else the service's process group."""
        if not self.signal_container(svc, signal.SIGKILL):
            self.signal_group(pid, signal.SIGKILL)

    def signal_container(self, svc, sig):
        """`sig` to a container's init; False when there is none (not a container, or LXC has
        not started it yet)."""
        cinit = self.health.container_init(svc) if svc.container else None
        if cinit is None:
            return False
        try:
            os.kill(cinit, sig)
            return True
        except OSError:
            return False

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
        return children or (not self.rt.pid1 and bool(descendants(os.getpid())))

    def kill_rest(self):
        for sig, timeout in ((signal.SIGTERM, self.cfg["shutdown_grace"]), (signal.SIGKILL, 5.0)):
            if not self.others_alive():
                return
            say("sending %s to all remaining processes" % signame(sig))
            signal_all(self.rt.pid1, sig)
            if self.wait_for(lambda: not self.others_alive(), timeout, poll=0.05):
                return
        say("some processes would not die")

    def idle(self):
        """What a device's PID 1 does after reboot(2) failed: reap, for ever."""
        if not self.guard("waiting", self.pump, 60.0):
            self.guard("reaping", self.bare_pump)


# -- the init: the parts in order, inside the guard ------------------------------------------


class Init:
    """The console and the config, the system set-up, then the supervisor until the end."""

    def __init__(self, runtime, config_path):
        self.rt, self.config_path = runtime, config_path
        self.supervisor = None

    def run(self):
        rt = self.rt
        TIMELINE.event("init", "start", STARTED)
        ensure_stdio(rt.pid1)
        console().reopen()
        cfg, error = load_config(self.config_path)
        if error:
            say(error + ": running without services")
        rt.apply_config(cfg)
        say("mode %s, %s signal table" % (rt.mode, rt.table_name))
        setup = SystemSetup(rt, cfg)
        setup.run()
        cfg["services"] = setup.deferred + list(cfg["services"])
        if cfg["timeline"]:
            if rt.mode == "device":
                kernel_events()
                if ECHO_FLAG in kernel_cmdline():  # the events so far, then each as it comes
                    console().write(b"".join(ECHO_PREFIX + e for e in TIMELINE.pending))
                    TIMELINE.echo = True
            TIMELINE.open(cfg["timeline"])
        sup = self.supervisor = Supervisor(rt, cfg, error)
        sup.leases = setup.leases
        for client in sup.leases:
            step("%s: DHCP in the background" % client.name, client.watch)
        if cfg["ready_file"]:  # a stale marker from the last boot must not claim readiness
            step("removing the old ready file", os.unlink, cfg["ready_file"], quiet=True)
        step("loading services", sup.load_services)
        step("firmware trial", sup.start_trial)
        sup.loop()
        status = sup.shutdown()
        return finish(rt, sup.action, status, sup.idle)


def last_resort(rt, action=None, grace=5.0):
    """The init failed outside every guard: keep reaping, and on a stop signal (or at once,
    when a stop was under way: `action`) end every process and finish as the init would."""
    while True:
        try:
            got = rt.wait(0.05 if console().pending or action else 5.0)
            reap_children()
            console().flush()
            for sig in got:
                if sig in rt.table and not action:
                    action = rt.table[sig]
                    say("%s: %s" % (signame(sig), action))
            if not action:
                continue
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if not reap_children()[1] and (rt.pid1 or not descendants(os.getpid())):
                    break
                say("sending %s to all processes" % signame(sig))
                signal_all(rt.pid1, sig)
                deadline = time.monotonic() + grace
                while reap_children()[1] and time.monotonic() < deadline:
                    rt.wait(0.05)  # SIGCHLD wakes us
            return finish(rt, action, 0, lambda: (rt.wait(60.0), reap_children()))
        except Exception as e:
            try:
                say("fatal error again, still reaping: %r" % (e,))
            except Exception:
                pass
            action = None  # what failed may fail again: wait for the next stop signal
            time.sleep(0.5)


def parse_args(argv, pid1):
    """(config path, None) to run, or (None, exit status) once the usage is printed."""
    path = os.environ.get("LXINIT_CONFIG") or DEFAULT_CONFIG
    args, stray, status = list(argv), [], False
    while args:  # no argparse: it exits on errors, and the kernel passes init stray words
        arg = args.pop(0)
        if arg == "--config" and args:
            path = args.pop(0)
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg in ("-h", "--help") and not pid1:
            sys.stdout.write(USAGE)
            return None, 0
        elif arg == "--status" and not pid1:
            status = True
        else:
            stray.append(arg)
    if stray and not pid1:  # on a host, a stray word is a mistake: start nothing
        sys.stderr.write("lxinit.py: unexpected argument %r\n%s" % (stray[0], USAGE))
        return None, 2
    if status:
        return None, print_status(path)
    for arg in stray:
        say("ignoring argument %r" % arg)
    return path, None


def print_status(config_path):
    """`--status`: the health the running init keeps in its health_file."""
    cfg = load_config(config_path)[0] if os.path.exists(config_path) else dict(DEFAULTS)
    try:
        with open(cfg["health_file"] or DEFAULTS["health_file"]) as f:
            health = parse_json(f.read())
    except (OSError, ValueError) as e:
        sys.stderr.write("lxinit.py: no health recorded (is the init running?): %s\n" % e)
        return 2
    for name, row in health["services"].items():
        sys.stdout.write("%-20s %-8s %-6s restarts %d\n" % (
            name, row["state"], "ready" if row["ready"] else "-", row["restarts"]))
    if health["healthy"]:
        sys.stdout.write("healthy\n")
        return 0
    why = ", ".join(health["unhealthy"]) or (
        "stopping" if health.get("stopping") else "booting")
    sys.stdout.write("unhealthy: %s\n" % why)
    return 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    path, status = parse_args(argv, os.getpid() == 1)
    if path is None:
        return status
    os.environ.setdefault("PATH", DEFAULT_PATH)  # the kernel starts init with no PATH
    rt = Runtime()  # first: signals blocked, a table chosen, before anything can fail
    init = None
    try:
        init = Init(rt, path)
        return init.run()
    except BaseException as e:
        # Everything, set-up included, runs in here: an init that ends panics the kernel.
        try:
            say("fatal error, still reaping: %r" % (e,))
        except BaseException:
            pass
        supervisor = init.supervisor if init else None
        return last_resort(rt, supervisor.action if supervisor else None)


if __name__ == "__main__":
    sys.exit(main())
