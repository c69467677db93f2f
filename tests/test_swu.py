"""SWUpdate bundles (lxembed/writers/swu.py) read by Debian's own swupdate 2022.12 on this host:
`swupdate -c` accepts the bundle with its certificate and refuses it (one line from
lxembed.rootfs.swupdate.refusal) with another key's certificate, changed by one byte, with a
tampered image or sw-description whose cpio checksums were fixed, unsigned, or for another
board; a real install writes the slot "device" (a file), sets the boot variables through
libubootenv in a redundant environment file and leaves the other slot alone. Two builds are
byte-identical; bad inputs are one line and nothing written."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import run_lxembed

from lxembed.arch import ARCHES
from lxembed.config import load_board
from lxembed.errors import UserError
from lxembed.rootfs.swupdate import (
    ENV_COPY_SIZE,
    PACKAGES,
    device_files,
    fw_env_config,
    install_command,
    picks,
    refusal,
)
from lxembed.runners import READY
from lxembed.runners.qemu_user import BinfmtHandler, run_in_tree
from lxembed.writers.swu import IMAGE_NAME, SwuInputs, read_bundle, write_cpio_crc, write_swu

BOARD = "qemu-arm64"
MiB = 1 << 20


def make_cert(where: Path, name: str) -> None:
    subprocess.run(["openssl", "req", "-batch", "-new", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(where / f"{name}.key"), "-out", str(where / f"{name}.crt"),
                    "-subj", f"/CN={name}", "-days", "3650"], check=True, capture_output=True)


def cpio_files(blob: bytes):
    """(name, data) of each file of a newc/crc cpio archive, in order."""
    out, off = [], 0
    while True:
        assert blob[off:off + 6] == b"070702", f"not a crc cpio header at {off}"
        size, namesize = int(blob[off + 54:off + 62], 16), int(blob[off + 94:off + 102], 16)
        name = blob[off + 110:off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        if name == "TRAILER!!!":
            return out
        out.append((name, blob[off:off + size]))
        off += size + (-size % 4)


def rewrite(files, path: Path) -> Path:
    """An archive of these files with correct cpio checksums: what an attacker can make."""
    buf = io.BytesIO()
    write_cpio_crc(tuple(files), buf, 0)
    path.write_bytes(buf.getvalue())
    return path


def inputs(tmp: Path, image: Path, key: str = "dev", **kw) -> SwuInputs:
    kw.setdefault("slots", {"A": str(tmp / "slot-a"), "B": str(tmp / "slot-b")})
    return SwuInputs(image=image, version="2.0", board=BOARD, key=tmp / f"{key}.key",
                     cert=tmp / f"{key}.crt", **kw)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Two key pairs, a small real ext4 slot image (mkfs.ext4 -d), its bundle built twice."""
    tmp = tmp_path_factory.mktemp("swu")
    for name in ("dev", "other"):
        make_cert(tmp, name)
    (tmp / "root" / "etc").mkdir(parents=True)
    (tmp / "root" / "etc" / "version").write_text("2.0\n")
    (tmp / "root" / "payload").write_bytes(os.urandom(256 * 1024))  # not all zeros
    image = tmp / "slot.ext4"
    with open(image, "wb") as fh:
        fh.truncate(8 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-U",
                    "6b1e2a3c-0000-4000-8000-000000000001", "-d", str(tmp / "root"), str(image)],
                   check=True, env=dict(os.environ, E2FSPROGS_FAKE_TIME="1700000000"))
    first = write_swu(inputs(tmp, image), tmp / "first.swu")
    second = write_swu(inputs(tmp, image), tmp / "second.swu")
    return tmp, image, first, second


# Several swupdate processes at once on one machine can hang: each names its notifier socket
# with an abstract address (NotifyServer, NotifyServer1...) and its helper processes may send
# to another instance's (a race in 2022.12, seen here). Each check runs in its own network
# namespace, where abstract socket names are its own, and PID namespace (nothing outlives it).
_ISOLATED = ["unshare", "--net", "--pid", "--fork", "--kill-child",
             *([] if os.geteuid() == 0 else ["--map-root-user"])]


def swupdate(run_dir: Path, bundle: Path, cert: Path, *extra: str) -> subprocess.CompletedProcess:
    """`swupdate -c` (check: signature, board, every image streamed and hashed) with its own
    TMPDIR (its control sockets) and namespaces, so that several run at once (each waits
    ~1 s for its threads)."""
    run_dir.mkdir()
    argv = install_command(str(bundle), "B", cert=str(cert), check_only=True)
    return subprocess.run([*_ISOLATED, *argv, *extra], capture_output=True, text=True,
                          env=dict(os.environ, TMPDIR=str(run_dir)), timeout=60)


def test_bundle_layout(work):
    tmp, image, first, _ = work
    files = cpio_files(first.path.read_bytes())
    assert [n for n, _ in files] == ["sw-description", "sw-description.sig", IMAGE_NAME]
    desc = files[0][1].decode()
    assert desc == first.description
    for slot, other in (("A", "B"), ("B", "A")):
        assert f'device = "{tmp}/slot-{slot.lower()}"' in desc
        assert f'{{ name = "BOOT_ORDER"; value = "{slot} {other}"; }}' in desc
        assert f'{{ name = "BOOT_{slot}_LEFT"; value = "3"; }}' in desc
    assert f'sha256 = "{first.sha256}"' in desc and 'compressed = "zstd"' in desc
    assert first.image_bytes == 8 * MiB and first.compressed_bytes < first.image_bytes // 8
    # the signature is a DER CMS blob that openssl itself verifies against sw-description
    (tmp / "desc").write_bytes(files[0][1])
    (tmp / "desc.sig").write_bytes(files[1][1])
    verify = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER",
                             "-in", str(tmp / "desc.sig"), "-content", str(tmp / "desc"),
                             "-CAfile", str(tmp / "dev.crt"), "-purpose", "any",
                             "-out", os.devnull], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr


def test_read_bundle(work, tmp_path):
    tmp, _, first, _ = work
    description, files = read_bundle(first.path)
    assert description == first.description
    assert [name for name, _ in files] == ["sw-description", "sw-description.sig", IMAGE_NAME]
    assert files[2][1] == first.compressed_bytes
    with pytest.raises(UserError, match="not an SWUpdate bundle"):
        read_bundle(tmp / "slot.ext4")


def test_two_builds_are_byte_identical(work):
    _, _, first, second = work
    assert first.path.read_bytes() == second.path.read_bytes()


def test_swupdate_accepts_and_refuses(work):
    """One `swupdate -c` per case, all at once."""
    tmp, _, first, _ = work
    dev, other = tmp / "dev.crt", tmp / "other.crt"
    data = first.path.read_bytes()
    files = cpio_files(data)
    flipped = bytearray(data)
    flipped[data.index(b"\x28\xb5\x2f\xfd") + 200] ^= 0x01  # one byte inside the image
    (tmp / "flipped.swu").write_bytes(bytes(flipped))
    desc_flip = bytearray(data)
    desc_flip[data.index(b'version = "2.0"') + 11] = ord("3")  # one byte of sw-description
    (tmp / "desc-flip.swu").write_bytes(bytes(desc_flip))
    other_image = write_swu(inputs(tmp, tmp / "other.crt"), tmp / "other-image.swu")  # any file
    swapped = [files[0], files[1], (IMAGE_NAME, cpio_files(other_image.path.read_bytes())[2][1])]
    edited = [(files[0][0], files[0][1].replace(b"slot-b", b"slot-a")), files[1], files[2]]
    cases = {
        "good": (first.path, dev, ()),
        "other key": (first.path, other, ()),
        "one byte (image)": (tmp / "flipped.swu", dev, ()),
        "one byte (description)": (tmp / "desc-flip.swu", dev, ()),
        "image swapped": (rewrite(swapped, tmp / "swapped.swu"), dev, ()),
        "description edited": (rewrite(edited, tmp / "edited.swu"), dev, ()),
        "unsigned": (rewrite([files[0], files[2]], tmp / "unsigned.swu"), dev, ()),
        "other board": (first.path, dev, ("-H", "rpi3-arm64:1.0")),
        "older": (first.path, dev, ("-H", f"{BOARD}:1.0", "-N", "2.1")),
        "same version": (first.path, dev, ("-H", f"{BOARD}:1.0", "-N", "2.0")),
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        runs = dict(zip(cases, pool.map(
            lambda n, c: swupdate(tmp / f"run{n}", c[0], c[1], *(c[2] or ("-H", f"{BOARD}:1.0"))),
            range(len(cases)), cases.values())))
    for case in ("good", "same version"):
        good = runs.pop(case)
        assert good.returncode == 0, good.stdout[-2000:] + good.stderr
    expected = {
        "other key": "not signed by this device's key",
        "one byte (image)": "damaged",
        "one byte (description)": "damaged (a file's cpio checksum does not match)",
        "image swapped": "an image does not match its sha256",
        "description edited": "sw-description does not match its signature",
        "unsigned": "not signed",
        "other board": "made for another board",
        "older": "older than the running firmware",
    }
    for case, run in runs.items():
        line = refusal(run.stdout + run.stderr)
        assert run.returncode != 0, case
        assert line.startswith(expected[case]), (case, line)
        assert "\n" not in line


def _install(tmp: Path, bundle: Path, slot: str, config: str,
             cert: Path) -> subprocess.CompletedProcess:
    """The device's command, run in a private mount namespace whose /etc is an overlay with
    the device's fw_env.config and hwrevision in it: the host's /etc is never touched
    (swupdate reads /etc/fw_env.config, a path compiled into it)."""
    upper, work = tmp / "etc-upper", tmp / "etc-work"
    upper.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    (upper / "fw_env.config").write_text(config)
    (upper / "hwrevision").write_text(f"{BOARD} 1.0\n")
    script = ('mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1,workdir=$2" /etc && '
              'shift 2 && exec "$@"')
    argv = install_command(str(bundle), slot, cert=str(cert))
    return subprocess.run([*_ISOLATED, "--mount", "--propagation", "private", "sh", "-c", script,
                           "sh", str(upper), str(work), *argv], capture_output=True, text=True,
                          env=dict(os.environ, TMPDIR=str(tmp)), timeout=60)


@pytest.mark.skipif(os.geteuid() != 0, reason="the install runs in a mount namespace: root")
def test_install_writes_inactive_slot_and_boot_env(work, tmp_path):
    tmp, image, first, _ = work
    slots = {s: tmp_path / f"slot-{s.lower()}" for s in "AB"}
    for path in slots.values():
        path.write_bytes(os.urandom(12 * MiB))  # a partition larger than the image
    old_a = slots["A"].read_bytes()
    bundle = write_swu(inputs(tmp, image, slots={s: str(p) for s, p in slots.items()}),
                       tmp_path / "update.swu")
    # The environment partition as the firmware image has it: two copies, mkenvimage -r.
    (tmp_path / "env.txt").write_text("BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n")
    subprocess.run(["mkenvimage", "-r", "-s", hex(ENV_COPY_SIZE), "-o", str(tmp_path / "copy"),
                    str(tmp_path / "env.txt")], check=True)
    env = tmp_path / "env.img"
    env.write_bytes((tmp_path / "copy").read_bytes() * 2)
    config = fw_env_config(str(env))
    (tmp_path / "fw_env.config").write_text(config)

    had_hwrevision = Path("/etc/hwrevision").exists()
    run = _install(tmp_path, bundle.path, "B", config, tmp / "dev.crt")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    assert slots["B"].read_bytes()[:bundle.image_bytes] == image.read_bytes()
    assert slots["A"].read_bytes() == old_a
    printed = subprocess.run(["fw_printenv", "-c", str(tmp_path / "fw_env.config")],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert {"BOOT_ORDER=B A", "BOOT_B_LEFT=3", "lxembed_trial=B", "BOOT_A_LEFT=3"} <= set(printed)
    assert not any(line.startswith("ustate=") for line in printed)  # -m: no state marker
    assert Path("/etc/hwrevision").exists() == had_hwrevision  # the host's /etc as it was


def test_device_needs():
    arm64 = ARCHES["arm64"]
    assert "/usr/lib/aarch64-linux-gnu/libubootenv.so.0" in picks(arm64)
    files = device_files(BOARD, b"CERT", "/dev/vda2")
    assert files["/etc/fw_env.config"] == b"/dev/vda2 0x0 0x4000\n/dev/vda2 0x4000 0x4000\n"
    assert files["/etc/hwrevision"] == b"qemu-arm64 1.0\n"
    assert install_command("/tmp/u.swu", "B")[:3] == ["swupdate", "-B", "uboot"]
    assert install_command("/tmp/u.swu", "B")[-2:] == ["-e", "stable,B"]


@pytest.mark.parametrize("change, message", [
    ({"key": Path("/nonexistent.key")}, "signing key /nonexistent.key: no such file"),
    ({"board": "3com"}, "board name '3com' cannot name a sw-description node"),
    ({"slots": {"A": "/dev/vda3"}}, "needs exactly two slots"),
    ({"image": Path("/nonexistent.ext4")}, "slot image /nonexistent.ext4: no such file"),
    ({"tries": 0}, "tries = 0"),
    ({"slot_bytes": 4 * MiB}, "the root image (8388608 bytes) does not fit a slot (4194304 bytes)"),
])
def test_bad_inputs_one_line_nothing_written(work, tmp_path, change, message):
    tmp, image, _, _ = work
    params = dict(image=image, version="1", board=BOARD, slots={"A": "/dev/a", "B": "/dev/b"},
                  key=tmp / "dev.key", cert=tmp / "dev.crt", where="recipe.toml:7")
    params.update(change)
    with pytest.raises(UserError) as err:
        write_swu(SwuInputs(**params), tmp_path / "out.swu")
    assert str(err.value).startswith("recipe.toml:7: ") and message in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_key_not_matching_certificate(work, tmp_path):
    tmp, image, _, _ = work
    with pytest.raises(UserError, match="cannot sign with .*dev.key and .*other.crt"):
        write_swu(SwuInputs(image, "1", BOARD, {"A": "/dev/a", "B": "/dev/b"},
                            tmp / "dev.key", tmp / "other.crt"), tmp_path / "out.swu")
    assert list(tmp_path.iterdir()) == []


def _device_recipe(tmp: Path, board: str, env_device: str, extra: str = "") -> Path:
    """busybox plus what lxembed.rootfs.swupdate says a device needs, as a recipe file."""
    arch = load_board(board).arch
    picks_glob = [p.replace(arch.triplet, "*") for p in picks(arch)]  # one recipe, any arch
    files = device_files(board, (tmp / "dev.crt").read_bytes(), env_device)
    lines = ['base = "busybox"', f"pick = {picks_glob!r}".replace("'", '"'),
             f"pick_packages = {list(PACKAGES)!r}".replace("'", '"'), extra, "", "[files]"]
    lines += [f'"{path}" = """{content.decode()}"""' for path, content in files.items()]
    recipe = tmp / f"swupdate-{board}.toml"
    recipe.write_text("\n".join(lines) + "\n")
    return recipe


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="qemu-user runs need root")
@pytest.mark.parametrize("board", ["qemu-arm64", "qemu-armhf", "qemu-mipsel"])
def test_device_installs_under_qemu_user(work, tmp_path, board):
    """The board's picks (swupdate, its ELF closure, the dlopen()ed libubootenv, fw_printenv)
    install a bundle of the image's own root for real under qemu-user: the slot and the
    environment are files in the sandbox's /tmp, the environment made by mkenvimage."""
    tmp, _, _, _ = work
    out = tmp_path / "out"
    run_lxembed("build", "-b", board, "-r", str(_device_recipe(tmp, board, "/tmp/env.img")),
                "-o", str(out), "--format", "dir,ext4", check=True)
    rootfs, image = out / "rootfs", out / "rootfs.ext4"
    bundle = write_swu(SwuInputs(image, "2.0", board, {"A": "/tmp/slot-a", "B": "/tmp/slot-b"},
                                 tmp / "dev.key", tmp / "dev.crt"), tmp_path / "update.swu")
    # The runner mounts the tree read-only with a fresh /tmp: the bundle, an environment of
    # two copies and another key's certificate go in beside the image's files.
    (tmp_path / "env.txt").write_text("BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n")
    subprocess.run(["mkenvimage", "-r", "-s", hex(ENV_COPY_SIZE), "-o", str(tmp_path / "copy"),
                    str(tmp_path / "env.txt")], check=True)
    (rootfs / "env.img").write_bytes((tmp_path / "copy").read_bytes() * 2)
    (rootfs / "update.swu").write_bytes(bundle.path.read_bytes())
    (rootfs / "other.pem").write_bytes((tmp / "other.crt").read_bytes())
    install = " ".join(install_command("/update.swu", "B"))
    refused = " ".join(install_command("/update.swu", "B", cert="/other.pem"))
    prepare = "cp /env.img /tmp/env.img && : > /tmp/slot-a && : > /tmp/slot-b && "
    with BinfmtHandler(load_board(board).arch):
        status, refusal_output = run_in_tree(rootfs, prepare + refused, timeout=600)
        assert status == 1, refusal_output[-3000:]
        start = time.monotonic()
        status, output = run_in_tree(rootfs, f"{prepare}{install} >/tmp/log 2>&1 || cat /tmp/log;"
                                     " fw_printenv; md5sum /tmp/slot-a /tmp/slot-b", timeout=600)
        seconds = time.monotonic() - start
    assert status == 0, output[-3000:]
    print(f"{board} install under qemu-user: {bundle.bytes} bytes bundle, {bundle.image_bytes} "
          f"bytes image, {seconds:.2f} s")
    assert f"{hashlib.md5(image.read_bytes()).hexdigest()}  /tmp/slot-b" in output, output
    assert "d41d8cd98f00b204e9800998ecf8427e  /tmp/slot-a" in output  # untouched (empty)
    assert {"BOOT_ORDER=B A", "BOOT_B_LEFT=3", "lxembed_trial=B"} <= set(output.splitlines())
    assert refusal(refusal_output).startswith("not signed by this device's key")


def _gpt_disk(path: Path, parts) -> list:
    """A GPT disk file (sfdisk) with partitions of these sizes, each filled with the given
    bytes; returns each partition's byte offset."""
    with open(path, "wb") as fh:
        fh.truncate(sum(size for size, _ in parts) + 2 * MiB)
    script = "label: gpt\n" + "".join(f"size={size // 512}\n" for size, _ in parts)
    subprocess.run(["sfdisk", "-q", str(path)], input=script, text=True, check=True)
    offsets = [int(p["start"]) * 512 for p in __import__("json").loads(subprocess.run(
        ["sfdisk", "-J", str(path)], capture_output=True, text=True, check=True).stdout)
        ["partitiontable"]["partitions"]]
    with open(path, "r+b") as fh:
        for offset, (_, data) in zip(offsets, parts):
            fh.seek(offset)
            fh.write(data)
    return offsets


@pytest.mark.slow
def test_device_installs_in_qemu_system(work, tmp_path):
    """qemu-arm64 under TCG with a GPT disk (environment, slot A, slot B, the bundle of the
    image's own root): the device copies the bundle to /tmp and installs it into slot B on
    the block device, through libubootenv on the environment partition; the disk, read on
    the host afterwards, holds the image in B, A untouched and the new boot order."""
    from lxembed.config import load_plan
    from lxembed.runners.accel import choose_accel
    from lxembed.runners.qemu_system import (
        QemuSetup,
        initramfs_with_modules,
        qemu_argv,
        running_guest,
    )
    from lxembed.sources.kernel import fetch_kernel

    tmp = work[0]
    board = "qemu-arm64"
    out = tmp_path / "out"
    recipe = _device_recipe(tmp, board, "/dev/vda1", extra='modules = ["virtio_blk"]')
    run_lxembed("build", "-b", board, "-r", str(recipe), "-o", str(out), "--format", "cpio,ext4",
                check=True)
    image = out / "rootfs.ext4"
    slot = (image.stat().st_size // MiB + 8) * MiB
    bundle = write_swu(SwuInputs(image, "2.0", board, {"A": "/dev/vda2", "B": "/dev/vda3"},
                                 tmp / "dev.key", tmp / "dev.crt"), tmp_path / "update.swu")
    (tmp_path / "env.txt").write_text("BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n")
    subprocess.run(["mkenvimage", "-r", "-s", hex(ENV_COPY_SIZE), "-o", str(tmp_path / "copy"),
                    str(tmp_path / "env.txt")], check=True)
    slot_a = os.urandom(MiB) * (slot // MiB)
    disk = tmp_path / "disk.img"
    offsets = _gpt_disk(disk, [(MiB, (tmp_path / "copy").read_bytes() * 2), (slot, slot_a),
                               (slot, b""), (bundle.bytes // MiB * MiB + MiB,
                                             bundle.path.read_bytes())])

    plan = load_plan(board, str(recipe))
    setup = QemuSetup.for_board(plan.board)
    setup.memory = 768  # the initramfs (swupdate's 64 MB of libraries) and the bundle in /tmp
    kernel, accel = fetch_kernel(plan.board), choose_accel(plan.arch)
    install = " ".join(install_command("/tmp/update.swu", "B"))
    with initramfs_with_modules(out / "rootfs.cpio") as initrd, \
            open(tmp_path / "console.log", "wb") as log:
        argv = qemu_argv(setup, kernel, initrd, accel) + [
            "-drive", f"file={disk},format=raw,if=none,id=fw",
            "-device", "virtio-blk-pci,drive=fw"]
        with running_guest(argv, log) as (proc, console):
            console.expect(READY, accel.timeout(120))
            console.sync(accel.timeout(30))
            status, text = console.run(f"head -c {bundle.bytes} /dev/vda4 > /tmp/update.swu",
                                       60)
            assert status == 0, text
            start = time.monotonic()
            status, text = console.run(f"{install} > /tmp/log 2>&1; echo rc=$?", 300)
            seconds = time.monotonic() - start
            assert "rc=0" in text, console.run("tail -20 /tmp/log", 30)[1]
            status, env = console.run("fw_printenv", 30)
            console.send("sync; poweroff -f\n")
            console.drain(accel.timeout(10))
    print(f"install in qemu-system ({accel.name}): {seconds:.2f} s, {bundle.bytes} bytes "
          f"bundle, {bundle.image_bytes} bytes image")
    env_lines = {line.strip() for line in env.splitlines()}
    assert {"BOOT_ORDER=B A", "BOOT_B_LEFT=3", "lxembed_trial=B"} <= env_lines
    data = disk.read_bytes()
    assert data[offsets[2]:offsets[2] + bundle.image_bytes] == image.read_bytes()
    assert data[offsets[1]:offsets[1] + slot] == slot_a
    (tmp_path / "host-fw_env.config").write_text(
        fw_env_config(str(disk), (offsets[0], offsets[0] + ENV_COPY_SIZE)))
    host = subprocess.run(["fw_printenv", "-c", str(tmp_path / "host-fw_env.config")],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    assert "BOOT_ORDER=B A" in host
