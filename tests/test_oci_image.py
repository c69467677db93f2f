"""OCI images (`oci-image`, `oci-archive`): the reference grammar and the refusals (quick), then
the image read by the real tools: skopeo (inspect, copy), umoci (unpack), podman (load, run the
init until ready, stop) with private storage that is removed after, byte-identical rebuilds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import HOST_BOARD, build_cli, wait_for

import lxembed.arch
from lxembed.config import load_plan
from lxembed.containers.image import _REFERENCE
from lxembed.pipeline import build_image

REF = "localhost/lxembed/container-busybox:latest"
SELF = 'hostname = "img"\npackages = ["busybox-static"]\ninit = "busybox"\n[container]\n'



@pytest.mark.parametrize("ref,ok", [
    ("router", True),
    ("localhost/lxembed/router:1.0", True),
    ("registry.example:5000/team/router_x-y.z:v1.2-rc_3", True),
    ("Router", False),  # path components are lower case
    ("team//router", False),
    ("router:", False),
    ("router:-x", False),  # a tag starts with a word character
    ("router@sha256:" + "0" * 64, False),  # lxembed names an image, it does not pin one
    ("router:" + "t" * 129, False),
])
def test_reference_grammar(ref, ok):
    assert bool(_REFERENCE.match(ref)) is ok


@pytest.mark.parametrize("recipe,fmt,where,message", [
    ('hostname = "b"\n[container]\nmode = "bind-host"\ninit = "python"\n', "oci-image",
     "bad.toml:3: ", "an OCI image of a bind-host container would need its host's /usr"),
    (SELF + 'image = "Bad Name"\n', "oci-archive", "bad.toml:5: ",
     "image 'Bad Name' is not an image reference"),
    (SELF + 'image = "x/y:"\n', "oci-image,oci-archive", "bad.toml:5: ",
     "image 'x/y:' is not an image reference"),
    (SELF + 'name = "web_"\n', "oci-image", "bad.toml:5: ",  # the default from the name
     "image 'localhost/lxembed/web_:latest' is not an image reference"),
])
def test_bad_input_one_line_nothing_written(tmp_path, capsys, recipe, fmt, where, message):
    code, out = build_cli(tmp_path, recipe, fmt=fmt)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[0].startswith(f"lxembed: error: {tmp_path}/{where}") and message in err[0], err
    assert all(e.startswith("lxembed: hint: ") for e in err[1:]), err
    assert not out.exists()


def test_architecture_without_an_oci_name(tmp_path, capsys, monkeypatch):
    """Every shipped architecture has a GOARCH name; one without is refused, not guessed."""
    monkeypatch.setitem(lxembed.arch.ARCHES, "i386",
                        replace(lxembed.arch.ARCHES["i386"], oci="", oci_variant=None))
    code, out = build_cli(tmp_path, SELF, fmt="oci-archive",
                          board='arch = "i386"\nsuite = "bookworm"\n')
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == (f"lxembed: error: {tmp_path}/b.toml: architecture i386 has no OCI "
                      f"(GOARCH) name: no OCI image for it")
    assert not out.exists()


# -- the real tools -----------------------------------------------------------------------------


def _tools_missing():
    missing = [t for t in ("skopeo", "umoci", "podman", "runc") if not shutil.which(t)]
    return f"{', '.join(missing)} not installed (scripts/quickstart.sh)" if missing else None


needs_tools = pytest.mark.skipif(_tools_missing() is not None, reason=_tools_missing() or "")


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """container-busybox built twice, as a layout and an archive: (first output, second)."""
    plan = load_plan("qemu-x86_64", "container-busybox")
    base = tmp_path_factory.mktemp("oci")
    outs = [base / "a", base / "b"]
    for out in outs:
        build_image(plan, out, ["oci-image", "oci-archive"])
    return outs


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
    return proc.stdout


@pytest.mark.slow
@needs_tools
def test_image_is_byte_identical_and_read_by_skopeo_and_umoci(image, tmp_path):
    a, b = image
    assert (a / "oci-archive.tar").read_bytes() == (b / "oci-archive.tar").read_bytes()
    files = sorted(p.relative_to(a / "oci-image") for p in (a / "oci-image").rglob("*"))
    assert files == sorted(p.relative_to(b / "oci-image") for p in (b / "oci-image").rglob("*"))
    for rel in files:
        if (a / "oci-image" / rel).is_file():
            assert (a / "oci-image" / rel).read_bytes() == (b / "oci-image" / rel).read_bytes()

    layout = f"oci:{a / 'oci-image'}:{REF}"
    info = json.loads(_run("skopeo", "inspect", layout))
    config = json.loads(_run("skopeo", "inspect", "--config", layout))
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    epoch = load_plan("qemu-x86_64", "container-busybox").epoch
    created = datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert info["Created"] == config["created"] == created  # SOURCE_DATE_EPOCH, not now
    assert config["config"]["Cmd"] == ["/sbin/init"]
    assert config["config"]["StopSignal"] == "SIGUSR1"  # busybox init's halt
    assert "PATH=/usr/sbin:/usr/bin:/sbin:/bin" in config["config"]["Env"]
    assert len(config["rootfs"]["diff_ids"]) == 1 == len(info["Layers"])
    # The archive is the same image through both transports that read one tar.
    archive = a / "oci-archive.tar"
    for ref in (f"oci-archive:{archive}:{REF}", f"docker-archive:{archive}"):
        assert json.loads(_run("skopeo", "inspect", "--config", ref)) == config
    # skopeo copies it into another layout with the same config (so the same image id).
    _run("skopeo", "copy", layout, f"oci:{tmp_path / 'copy'}:copied")
    copied = json.loads(_run("skopeo", "inspect", "--config", f"oci:{tmp_path / 'copy'}:copied"))
    assert copied == config

    _run("umoci", "unpack", "--image", f"{a / 'oci-image'}:{REF}", str(tmp_path / "bundle"))
    rootfs = tmp_path / "bundle" / "rootfs"
    assert os.readlink(rootfs / "bin" / "sh") == "/bin/busybox"
    assert (rootfs / "etc" / "hostname").read_text().strip() == "container-busybox"
    runtime = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert runtime["process"]["args"] == ["/sbin/init"]


@pytest.mark.slow
@pytest.mark.lxc
@needs_tools
@pytest.mark.skipif(os.geteuid() != 0, reason="podman runs rootful here")
def test_podman_loads_and_runs_the_archive(image, tmp_path):
    """Private storage (vfs: no mounts left behind) in a temp dir; the settings FACTS.md measured:
    cgroupfs, the file events logger, runc (crun fails on this hybrid cgroup layout), lowered
    rlimits."""
    # podman refuses a runroot path longer than 50 characters: tmp_path's are longer.
    state_dir = Path(tempfile.mkdtemp(prefix="lxpm", dir="/tmp"))
    podman = ["podman", "--root", str(state_dir / "root"), "--runroot", str(state_dir / "run"),
              "--tmpdir", str(state_dir / "tmp"),  # libpod's state and events log too
              "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
              "--events-backend", "file", "--runtime", "runc"]
    name = f"lxembed-oci-test-{os.getpid()}"
    try:
        loaded = _run(*podman, "load", "-i", str(image[0] / "oci-archive.tar"))
        assert f"Loaded image: {REF}" in loaded, loaded
        _run(*podman, "run", "-d", "--name", name, "--network", "none",
             "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", REF)
        logs = lambda: subprocess.run(podman + ["logs", name], capture_output=True,  # noqa: E731
                                      text=True).stdout
        assert wait_for(lambda: "lxembed: ready" in logs(), 20, 0.2), logs()
        # PID 1 is the image's own busybox (its init renames itself "init").
        assert _run(*podman, "exec", name, "readlink", "/proc/1/exe").strip() == "/bin/busybox"
        # The image's StopSignal (SIGUSR1: busybox init halts) ends it well before podman's
        # 10 s SIGKILL.
        _run(*podman, "stop", "-t", "10", name)
        state = json.loads(_run(*podman, "inspect", name))[0]["State"]
        assert state["ExitCode"] == 0 and not state["OOMKilled"], state
    finally:
        subprocess.run(podman + ["rm", "-f", "-i", name], capture_output=True)
        subprocess.run(podman + ["rmi", "-f", "-a"], capture_output=True)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.mark.parametrize("arch,platform", [
    ("amd64", {"architecture": "amd64", "os": "linux"}),
    ("armhf", {"architecture": "arm", "os": "linux", "variant": "v7"}),
    ("armel", {"architecture": "arm", "os": "linux", "variant": "v5"}),
    ("mipsel", {"architecture": "mipsle", "os": "linux"}),
])
def test_platform_comes_from_the_architecture_table(tmp_path, arch, platform):
    from lxembed.config import Plan
    from lxembed.config.loader import load_board, load_recipe
    from lxembed.containers import container_spec
    from lxembed.containers.image import image_config

    (tmp_path / "b.toml").write_text(f'arch = "{arch}"\nsuite = "bookworm"\n')
    (tmp_path / "r.toml").write_text(SELF)
    plan = Plan(load_board(str(tmp_path / "b.toml")), load_recipe(str(tmp_path / "r.toml")),
                1704067200)
    config, got = image_config(plan, container_spec(plan))
    assert got == platform
    assert {k: config[k] for k in platform} == platform  # the config says it too
    assert config["created"] == "2024-01-01T00:00:00Z"


@pytest.mark.slow
def test_an_image_keeps_the_ids_the_container_sees(tmp_path):
    """With idmap the bundle's rootfs is shifted for LXC/crun; the image is not: podman,
    Incus or lxc-create map it themselves."""
    import gzip
    import io
    import tarfile

    from lxembed.config import Plan
    from lxembed.config.loader import load_board, load_recipe

    (tmp_path / "b.toml").write_text(HOST_BOARD)
    (tmp_path / "r.toml").write_text(SELF + 'idmap = ["u 0 100000 65536", "g 0 100000 65536"]\n')
    plan = Plan(load_board(str(tmp_path / "b.toml")), load_recipe(str(tmp_path / "r.toml")),
                1704067200)
    build_image(plan, tmp_path / "out", ["oci-image", "oci"])
    assert (tmp_path / "out/oci/rootfs/bin/busybox").stat().st_uid == 100000
    index = json.loads((tmp_path / "out/oci-image/index.json").read_text())
    blobs = tmp_path / "out/oci-image/blobs/sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    layer = gzip.decompress((blobs / manifest["layers"][0]["digest"][7:]).read_bytes())
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        assert tar.getmember("./bin/busybox").uid == 0
