"""Many boards at once: `lxembed build -b a,b,c` and `lxembed matrix` for CI engines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from conftest import make_deb, run_lxembed

from lxembed.config import list_boards, list_recipes, load_recipe

IMAGE_RECIPES = [r for r in list_recipes() if load_recipe(r).settings["container"] is None]


@pytest.mark.parametrize("ci, schema", [("github", "vendor.github-workflows"),
                                        ("gitlab", "vendor.gitlab-ci")])
def test_matrix_lists_every_cell_and_validates(tmp_path, ci, schema):
    result = run_lxembed("matrix", "--ci", ci, "--apt-proxy", "http://10.9.9.9:3142", check=True)
    doc = yaml.safe_load(result.stdout)
    jobs = doc["jobs"] if ci == "github" else {k: v for k, v in doc.items() if "script" in v}
    want = {f"{b}-{r}" for b in list_boards() for r in IMAGE_RECIPES}
    assert set(jobs) == want
    text = json.dumps(jobs)
    assert "lxembed test -b qemu-arm64 -r busybox\"" in text
    assert "lxembed test -b mt7621-router -r busybox --user" in text  # hardware: qemu-user
    assert "lxembed test -b rpi3-arm64 -r busybox\"" in text  # emulated on raspi3b
    assert "http://10.9.9.9:3142" in result.stdout
    path = tmp_path / f"{ci}.yml"
    path.write_text(result.stdout)
    check = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema,
                            str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_matrix_refuses_an_unknown_board():
    result = run_lxembed("matrix", "-b", "qemu-arm64,qemu-vax")
    assert result.returncode == 2 and "unknown board 'qemu-vax'" in result.stderr


def test_build_many_boards_in_one_command(tmp_path):
    make_deb(tmp_path / "data.deb", [("./opt/", "dir", None), ("./opt/a", "file", b"a\n")])
    (tmp_path / "r.toml").write_text('debs = ["data.deb"]\n')
    (tmp_path / "bad.toml").write_text('debs = ["missing.deb"]\n')
    boards = "rpi3-arm64,mt7621-router"
    result = run_lxembed("build", "-b", boards, "-b", str(tmp_path / "board.toml"), "-r",
                         f"{tmp_path / 'r.toml'},{tmp_path / 'bad.toml'}", "-o",
                         str(tmp_path / "out"), "-f", "tar", "--json")
    assert result.returncode == 2 and "board.toml does not exist" in result.stderr
    (tmp_path / "board.toml").write_text('arch = "armhf"\n')
    result = run_lxembed("build", "-b", boards, "-b", str(tmp_path / "board.toml"), "-r",
                         f"{tmp_path / 'r.toml'},{tmp_path / 'bad.toml'}", "-o",
                         str(tmp_path / "out"), "-f", "tar", "--json")
    assert result.returncode == 1, result.stderr  # one recipe fails in every cell
    cells = json.loads(result.stdout)["cells"]
    assert [(c["board"], c["recipe"], c["ok"]) for c in cells] == [
        (b, r, r == "r") for b in ("rpi3-arm64", "mt7621-router", "board") for r in ("r", "bad")]
    for c in cells:
        if c["ok"]:
            assert (tmp_path / "out" / f"{c['board']}-r" / "rootfs.tar").is_file()
        else:
            assert "missing.deb" in c["error"]
    table = run_lxembed("build", "-b", boards, "-r", str(tmp_path / "r.toml"), "-o",
                        str(tmp_path / "out2"), "-f", "tar", check=True).stdout
    assert table.splitlines()[-1] == "2/2 cells built"
