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
        # rpi3-arm64 is real hardware that QEMU also emulates (raspi3b)
        assert (board.qemu is not None) == (name.startswith("qemu-") or name == "rpi3-arm64")
    assert load_board("qemu-armel").qemu["kernel_arch"] == "armhf"
    riscv = load_board("qemu-riscv64")  # riscv64 is a Debian architecture from trixie on
    assert (riscv.suite, riscv.arch.debian) == ("trixie", "riscv64")


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


# -- each of these failed on the code before the "solid ground" fixes ---------------------------
def _board(tmp_path, text):
    path = tmp_path / "b.toml"
    path.write_text('description = "x"\n' + text)
    return str(path)


@pytest.mark.parametrize("text, line", [
    ('arch = "arm64"\nqemu.memory = "big"\n', 3),            # dotted key
    ('arch = "arm64"\n\nqemu = { memory = "big" }\n', 4),     # inline table
    ('arch = "arm64"\n[qemu]\ncpu = "a"\nmemory = "big"\n', 5),
])
def test_wrong_type_in_dotted_or_inline_table_names_its_line(tmp_path, text, line):
    with pytest.raises(UserError, match=rf"b.toml:{line}: \[qemu\] memory: expected an integer"):
        load_board(_board(tmp_path, text))


def test_missing_top_level_key_names_the_key_not_an_empty_table(tmp_path):
    with pytest.raises(UserError) as err:
        load_board(_board(tmp_path, ""))
    assert str(err.value).endswith("b.toml: missing required key 'arch'")


def test_missing_key_in_second_array_table_names_its_line(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[[users]]\nname = "a"\nuid = 5\n\n[[users]]\nname = "b"\n')
    with pytest.raises(UserError, match=r"r.toml:5: \[users\] needs 'uid'"):
        load_recipe(str(path))


def test_syntax_error_at_end_of_file_names_the_last_line(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('hostname = "x"\n\npackages = ["a",\n')
    with pytest.raises(UserError, match=r"r.toml:3: invalid TOML"):
        load_recipe(str(path))


def test_list_of_numbers_is_not_a_list_of_strings(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('hostname = "x"\npackages = [1, 2]\n')
    with pytest.raises(UserError, match=r"r.toml:2: packages: expected a list of strings, got 1"):
        load_recipe(str(path))


@pytest.mark.parametrize("encoding, what", [("latin-1", "byte 0xe9"), ("utf-16", "UTF-16")])
def test_recipe_not_in_utf8_is_one_clear_error(tmp_path, encoding, what):
    path = tmp_path / "r.toml"
    path.write_bytes('hostname = "x"\ndescription = "café"\n'.encode(encoding))
    with pytest.raises(UserError, match=rf"r.toml:\d+: not UTF-8 text \({what}\)") as err:
        load_recipe(str(path))
    assert "iconv" in err.value.hint


def test_redefined_interface_replaces_the_base_one(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('base = "busybox"\n[[network.interfaces]]\nname = "eth0"\n'
                    'ipv4 = ["10.0.0.2/24"]\n[[network.interfaces]]\nname = "eth1"\ndhcp = true\n')
    interfaces = load_recipe(str(path)).network["interfaces"]
    assert [(i["name"], i["dhcp"], i["ipv4"]) for i in interfaces] == [
        ("eth0", False, ["10.0.0.2/24"]), ("eth1", True, [])]
