"""Configuration: the original's formats, clear errors naming the field and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsg.core.errors import ConfigError
from dsg.workcopy.config import load_project_config, load_user_config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / ".dsgconfig.yml"
    p.write_text(text)
    return p


def test_repository_format(tmp_path: Path) -> None:
    cfg = load_project_config(
        write(
            tmp_path,
            "name: SV\nrepository: {type: zfs, host: scott, pool: dsgdata, mountpoint: /var/repos/zsd}\n"
            "ignore: {names: [.DS_Store], suffixes: [.tmp], paths: [task1/input/secret.csv/]}\n",
        )
    )
    assert cfg.repo_path == "/var/repos/zsd/SV"
    assert cfg.repository.transport == "ssh"
    assert cfg.data_dirs == ["input", "output", "frozen"]
    assert cfg.ignore.paths == ["task1/input/secret.csv"]


def test_xfs_is_an_alias_of_posix(tmp_path: Path) -> None:
    cfg = load_project_config(
        write(tmp_path, "name: p\nrepository: {type: xfs, host: localhost, mountpoint: /r}\n")
    )
    assert cfg.repository.type == "posix" and cfg.repository.transport == "local"


def test_legacy_transport_ssh_form(tmp_path: Path) -> None:
    cfg = load_project_config(
        write(
            tmp_path,
            "transport: ssh\nssh:\n  host: localhost\n  path: /var/repos/dsg\n  name: CC\n  type: xfs\n"
            "project:\n  data_dirs: [input, hand]\n",
        )
    )
    assert cfg.name == "CC"
    assert cfg.repository.type == "posix"
    assert cfg.repo_path == "/var/repos/dsg/CC"
    assert cfg.data_dirs == ["input", "hand"]


def test_legacy_zfs_without_pool_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pool"):
        load_project_config(
            write(tmp_path, "transport: ssh\nssh: {host: h, path: /r, name: X, type: zfs}\n")
        )


def test_unknown_key_names_field_and_line(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "name: p\nrepository:\n  type: posix\n  host: localhost\n  mountpoint: /r\n  colour: red\n",
    )
    with pytest.raises(ConfigError) as e:
        load_project_config(p)
    assert "repository.colour (line 6): unknown key" in e.value.message


def test_wrong_type_names_field_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, "name: p\nrepository: {type: posix, mountpoint: /r}\ndata_dirs: input\n")
    with pytest.raises(ConfigError, match=r"data_dirs \(line 3\)"):
        load_project_config(p)


def test_malformed_yaml_gives_line_and_column(tmp_path: Path) -> None:
    p = write(tmp_path, "name: p\nrepository: {type: posix\n  mountpoint: [\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+, column \d+"):
        load_project_config(p)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("- a\n- b\n", "mapping"),
        ("name: ../evil\nrepository: {type: posix, mountpoint: /r}\n", "name"),
        ("name: p\nrepository: {type: posix, mountpoint: relative}\n", "absolute"),
        ("name: p\nrepository: {type: zfs, mountpoint: /r}\n", "pool"),
        ("name: p\nrepository: {type: posix, mountpoint: /r}\ndata_dirs: [a/b]\n", "single"),
        ("name: p\nrepository: {type: nfs, mountpoint: /r}\n", "repository.type"),
        ("name: p\ntransport: rclone\n", "not supported"),
    ],
)
def test_bad_configs_are_refused(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_project_config(write(tmp_path, text))


def test_user_config_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, xdg, dsg_home = tmp_path / "home", tmp_path / "xdg", tmp_path / "dsghome"
    (home / ".config" / "dsg").mkdir(parents=True)
    (xdg / "dsg").mkdir(parents=True)
    dsg_home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.delenv("DSG_CONFIG_HOME", raising=False)
    (home / ".config/dsg/dsg.yml").write_text("user_name: Home\nuser_id: home@x.org\n")
    assert load_user_config().user_name == "Home"
    (xdg / "dsg/dsg.yml").write_text("user_name: Xdg\nuser_id: xdg@x.org\n")
    assert load_user_config().user_id == "xdg@x.org"
    monkeypatch.setenv("DSG_CONFIG_HOME", str(dsg_home))
    (dsg_home / "dsg.yml").write_text("user_name: Env\n")
    u = load_user_config()
    assert (u.user_name, u.user_id) == ("Env", "xdg@x.org")


def test_user_config_missing_or_invalid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("DSG_CONFIG_HOME", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match=r"no dsg\.yml"):
        load_user_config()
    (tmp_path / "none").mkdir()
    (tmp_path / "none/dsg.yml").write_text("user_name: A\nuser_id: not-an-email\n")
    with pytest.raises(ConfigError, match=r"user_id \(line 2\)"):
        load_user_config()
