"""Boards and recipes: validation with file:line errors, bases, the resolved plan."""

from __future__ import annotations

import json

import pytest

from lxembed.config import list_boards, list_recipes, load_board, load_plan, load_recipe
from lxembed.errors import UserError
from lxembed.sources.mirror import find_mirrors, host_sources

QEMU_BOARDS = ["qemu-x86_64", "qemu-i386", "qemu-arm64", "qemu-armhf", "qemu-armel",
               "qemu-mipsel", "qemu-mips64el"]


def test_every_board_loads_and_pins_a_suite():
    names = list_boards()
    for name in QEMU_BOARDS + ["rpi3-arm64", "mt7621-router"]:
        assert name in names
        board = load_board(name)
        assert board.suite == "bookworm"
        assert (board.qemu is not None) == name.startswith("qemu-")
    assert load_board("qemu-armel").qemu["kernel_arch"] == "armhf"


def test_recipes_load():
    assert "busybox" in list_recipes()
    recipe = load_recipe("busybox")
    assert recipe.packages == ["busybox-static"]
    assert recipe.network["interfaces"][0]["name"] == "eth0"


def test_unknown_key_names_file_and_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('description = "x"\npackages = ["busybox-static"]\n\npackges = ["x"]\n')
    with pytest.raises(UserError, match=r"bad.toml:4: unknown key 'packges'"):
        load_recipe(str(path))


def test_unknown_key_in_nested_table(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('hostname = "a"\n\n[[users]]\nname = "app"\nuid = 1000\nshel = "/bin/sh"\n')
    with pytest.raises(UserError, match=r"bad.toml:6: unknown key \[users\] 'shel'"):
        load_recipe(str(path))


def test_wrong_type_names_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('packages = "busybox-static"\n')
    with pytest.raises(UserError, match=r"bad.toml:1: packages: expected a list, got str"):
        load_recipe(str(path))


def test_malformed_toml_names_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('description = "ok"\nhostname = "unterminated\n')
    with pytest.raises(UserError, match=r"bad.toml:2: invalid TOML"):
        load_recipe(str(path))


def test_bad_choice(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('init = "systemd"\n')
    with pytest.raises(UserError, match=r"bad.toml:1: init: 'systemd' is not one of"):
        load_recipe(str(path))


def test_unknown_board():
    with pytest.raises(UserError, match=r"unknown board 'qemu-sparc'.*known: .*qemu-arm64"):
        load_board("qemu-sparc")


def test_base_recipe_appends_lists(tmp_path):
    path = tmp_path / "child.toml"
    path.write_text('base = "busybox"\npackages = ["zlib1g"]\nhostname = "child"\n')
    recipe = load_recipe(str(path))
    assert recipe.packages == ["busybox-static", "zlib1g"]
    assert recipe.hostname == "child"
    assert recipe.overlays == ["busybox-base", "udhcpc"]


def test_show_prints_resolved_configuration(cli):
    result = cli("show", "--board", "qemu-mipsel", "--recipe", "busybox", check=True)
    shown = json.loads(result.stdout)
    assert shown["arch"]["debian"] == "mipsel"
    assert shown["recipe"]["packages"] == ["busybox-static"]
    assert shown["board"]["qemu"]["machine"] == "malta"


def test_plan_epoch_from_environment(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    assert load_plan("qemu-arm64", "busybox").epoch == 1234567890


def test_mirror_from_both_source_formats(tmp_path):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(
        "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://mirror.example/debian bookworm main\n# deb http://old.example/debian sid main\n")
    (etc / "sources.list.d" / "sec.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: https://other.example/apt\nSuites: nodistro\nComponents: main\n")
    assert len(host_sources(str(etc))) == 3
    mirrors = find_mirrors("bookworm", etc=str(etc))
    assert mirrors.main == "http://mirror.example/debian"
    assert mirrors.security == "http://mirror.example/debian-security"
    assert find_mirrors("bookworm", "http://override.example/debian/",
                        etc=str(etc)).main == "http://override.example/debian"


def test_config_reference_is_current(cli):
    from conftest import ROOT
    result = cli("config-docs", check=True)
    assert (ROOT / "docs/config.md").read_text() == result.stdout, \
        "run: lxembed config-docs > docs/config.md"


def test_local_debs_are_relative_to_the_recipe_that_names_them(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "parent.toml").write_text('debs = ["pkgs/tool_1.0_all.deb"]\n')
    child = tmp_path / "child.toml"
    child.write_text(f'base = "{tmp_path / "base" / "parent.toml"}"\ndebs = ["mine.deb"]\n')
    recipe = load_recipe(str(child))
    assert recipe.debs == [str(tmp_path / "base/pkgs/tool_1.0_all.deb"), str(tmp_path / "mine.deb")]
