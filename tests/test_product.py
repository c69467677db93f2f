"""A user's product directory (boards/, recipes/, overlays/ in the current directory, an
lxembed.toml naming one, -C DIR) found before LXEMBED_PATH and the shipped ones; `lxembed list`
saying where each comes from; `lxembed new`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import ROOT, run_lxembed

from lxembed.cli import main
from lxembed.config import load_recipe
from lxembed.config.product import shipped_dir


def _product(root: Path) -> Path:
    """A product that hides the shipped busybox recipe with one extending it, and adds a
    board, an overlay and a recipe using them."""
    (root / "boards").mkdir(parents=True)
    (root / "boards/dev.toml").write_text('description = "my dev board"\narch = "armhf"\n')
    (root / "recipes").mkdir()
    (root / "recipes/busybox.toml").write_text('base = "busybox"\ndescription = "mine"\n'
                                               'hostname = "mine"\n')
    (root / "recipes/app.toml").write_text('base = "busybox"\noverlays = ["app"]\n')
    (root / "overlays/app/etc").mkdir(parents=True)
    (root / "overlays/app/etc/app.conf").write_text("x\n")
    return root


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LXEMBED_PATH"}
    return {**env, **extra}


def _main(capsys, monkeypatch, cwd: Path, *args: str):
    """The command line in this process (a subprocess costs 0.3 s): status, stdout, stderr."""
    monkeypatch.delenv("LXEMBED_PATH", raising=False)
    monkeypatch.chdir(cwd)  # also undoes what -C does
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def _snapshot(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_product_recipe_extends_the_shipped_one_it_hides(tmp_path, monkeypatch):
    monkeypatch.delenv("LXEMBED_PATH", raising=False)
    monkeypatch.chdir(_product(tmp_path))
    recipe = load_recipe("busybox")
    # Its own name as its base: the next busybox in the search order, not a loop.
    assert recipe.sources == [tmp_path / "recipes/busybox.toml",
                              shipped_dir() / "recipes/busybox.toml"]
    assert recipe.hostname == "mine" and "busybox-static" in recipe.packages
    app = load_recipe("app")  # a product recipe's base is the product's busybox, then shipped
    assert app.hostname == "mine" and app.overlays[-1] == "app"


def test_list_says_where_each_comes_from(tmp_path):
    product = _product(tmp_path / "prod")
    extra = tmp_path / "extra"
    (extra / "recipes").mkdir(parents=True)
    (extra / "recipes/extra.toml").write_text('description = "from the path"\n')
    (extra / "recipes/app.toml").write_text('description = "hidden by the product"\n')
    result = run_lxembed("list", "--json", cwd=product, env=_env(LXEMBED_PATH=str(extra)),
                         check=True)
    listed = json.loads(result.stdout)
    assert [(d["from"], d["dir"]) for d in listed["search"]] == [
        ("product", str(product)), ("LXEMBED_PATH", str(extra)), ("shipped", str(shipped_dir()))]
    assert listed["boards"]["dev"]["from"] == "product"
    assert listed["boards"]["qemu-arm64"]["from"] == "shipped"
    assert listed["recipes"]["busybox"]["from"] == "product"
    assert listed["recipes"]["busybox"]["hides"] == ["shipped"]
    assert listed["recipes"]["app"]["hides"] == ["LXEMBED_PATH"]
    assert listed["recipes"]["extra"]["from"] == "LXEMBED_PATH"
    assert listed["overlays"]["app"]["path"] == str(product / "overlays/app")
    assert listed["overlays"]["busybox-base"]["from"] == "shipped"
    text = run_lxembed("list", cwd=product, env=_env(), check=True).stdout
    assert any(line.split()[:3] == ["busybox", "product", "mine"] and "(hides shipped)" in line
               for line in text.splitlines()), text


def test_the_checkout_itself_is_shipped_not_a_product():
    listed = json.loads(run_lxembed("list", "--json", cwd=ROOT, env=_env(), check=True).stdout)
    assert listed["search"] == [{"from": "shipped", "dir": str(ROOT)}]


def test_lxembed_toml_and_dash_c_name_the_product(tmp_path):
    _product(tmp_path / "repo/firmware")
    (tmp_path / "repo/lxembed.toml").write_text('# my product\ndir = "firmware"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_lxembed("-C", str(tmp_path / "repo"), "show", "-b", "dev", "-r", "app",
                         cwd=elsewhere, env=_env(), check=True)
    assert json.loads(result.stdout)["board"]["file"] == str(tmp_path / "repo/firmware/boards"
                                                             "/dev.toml")


@pytest.mark.parametrize("setup, args, message", [
    (lambda d: (d / "lxembed.toml").write_text('# product\ndir = "gone"\n'), ("list",),
     r"lxembed.toml:2: dir 'gone': .*gone is not a directory"),
    (lambda d: (d / "lxembed.toml").write_text('dirs = "x"\n'), ("list",),
     r"lxembed.toml:1: unknown key 'dirs'"),
    (lambda d: None, ("-C", "missing", "list"), r"-C missing: No such file or directory"),
])
def test_a_bad_product_location_is_one_line(tmp_path, capsys, monkeypatch, setup, args,
                                            message):
    setup(tmp_path)
    status, out, err = _main(capsys, monkeypatch, tmp_path, *args)
    assert status == 2 and out == ""
    assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_new_writes_a_product_that_resolves(tmp_path):
    result = run_lxembed("new", "gizmo", cwd=tmp_path, env=_env(), check=True)
    assert "lxembed test --user -b gizmo -r gizmo" in result.stdout
    product = tmp_path / "gizmo"
    assert _snapshot(product) == [".gitignore", "boards", "boards/gizmo.toml", "lxembed.toml",
                                  "overlays", "overlays/gizmo", "overlays/gizmo/etc",
                                  "overlays/gizmo/etc/gizmo-release", "recipes",
                                  "recipes/gizmo.toml"]
    shown = json.loads(run_lxembed("show", "-b", "gizmo", "-r", "gizmo", cwd=product,
                                   env=_env(), check=True).stdout)
    assert shown["board"]["file"] == str(product / "boards/gizmo.toml")
    assert shown["board"]["arch"] == "arm64"  # the copy of qemu-arm64
    assert shown["board"]["suite"] == "trixie"  # a new board's: the newest suite with arm64
    assert shown["board"]["description"] == "gizmo: started as a copy of qemu-arm64"
    assert shown["recipe"]["overlays"] == ["busybox-base", "udhcpc", "gizmo"]
    assert [c["name"] for c in shown["recipe"]["checks"]] == ["gizmo-release"]


def test_new_into_the_empty_current_directory_takes_its_name(tmp_path, capsys, monkeypatch):
    here = tmp_path / "widget"
    here.mkdir()
    assert _main(capsys, monkeypatch, here, "new", ".")[0] == 0
    assert (here / "recipes/widget.toml").is_file()
    assert (here / "overlays/widget/etc/widget-release").read_text() == "widget 0.1\n"


@pytest.mark.parametrize("prepare, args, message", [
    (lambda d: (d / "p").mkdir() or (d / "p/keep").write_text("mine\n"), ("new", "p"),
     "p: not empty"),
    (lambda d: (d / "p").write_text("a file\n"), ("new", "p"), "p: exists and is not a dir"),
    (lambda d: None, ("new", "p", "--name", "no/slash"), "'no/slash' cannot name a board"),
    (lambda d: None, ("new", "p", "--board", "nosuch"), "unknown board 'nosuch'"),
    (lambda d: None, ("new", "p", "--board", "qemu-mipsel", "--suite", "trixie"),
     "Debian trixie has no mipsel"),
    (lambda d: None, ("new", "p", "--suite", "sid"), "unknown Debian suite 'sid'"),
    # Fails part-way (etc/NAME-release is one byte too long a file name, after the board and
    # recipe are written): everything it made goes, the parents it made too.
    (lambda d: None, ("new", "a/b/p", "--name", "x" * 248), "File name too long"),
    (lambda d: (d / "p").mkdir(), ("new", "p", "--name", "x" * 248), "File name too long"),
])
def test_new_refuses_and_writes_nothing(tmp_path, capsys, monkeypatch, prepare, args, message):
    prepare(tmp_path)
    before = [(p, p.read_bytes() if p.is_file() else None) for p in sorted(tmp_path.rglob("*"))]
    status, _, err = _main(capsys, monkeypatch, tmp_path, *args)
    assert status == 2
    # One line (and perhaps a hint line after it).
    assert message in err.splitlines()[0] and not [
        line for line in err.splitlines()[1:] if not line.startswith("lxembed: hint:")], err
    after = [(p, p.read_bytes() if p.is_file() else None) for p in sorted(tmp_path.rglob("*"))]
    assert after == before


@pytest.mark.slow
def test_a_new_product_passes_its_checks_under_qemu_user(tmp_path):
    run_lxembed("new", "gizmo", cwd=tmp_path, env=_env(), check=True)
    result = run_lxembed("test", "--user", "-b", "qemu-arm64", "-r", "gizmo",
                         cwd=tmp_path / "gizmo", env=_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert any(line.split()[:3] == ["ok", "gizmo-release", "gizmo"]
               for line in result.stdout.splitlines()), result.stdout
