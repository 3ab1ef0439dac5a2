"""Saved authentications: file mode, refusal of readable files, masking, resolving configs, the CLI."""

from __future__ import annotations

import os
import stat

import pytest

from klaviyo_bridge.cli import main
from klaviyo_bridge.errors import ConfigError
from klaviyo_bridge.secrets import ApiKey, CredentialStore, hint, redact, resolve_connection

KEY = "pk_testonly_0123456789abcdef0123a1b2"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_save_list_delete_and_file_mode(tmp_path):
    store = CredentialStore(tmp_path / "credentials.json")
    store.save("acme", KEY)
    assert mode(store.path) == 0o600
    assert store.get("acme").reveal() == KEY and "acme" in store
    assert store.list() == [{"name": "acme", "hint": "pk_…a1b2", "created_at": store.list()[0]["created_at"]}]
    with pytest.raises(ConfigError, match="already exists"):
        store.save("acme", KEY)
    os.chmod(store.path, 0o640)  # someone loosened it: the next write puts it back, reads refuse
    with pytest.raises(ConfigError, match=r"can be read by other users \(mode 0640\).*chmod 600"):
        store.get("acme")
    os.chmod(store.path, 0o600)
    store.save("other", "pk_zz" + "9" * 30)
    assert mode(store.path) == 0o600
    assert store.delete("acme") and "acme" not in store
    with pytest.raises(ConfigError, match="no saved authentication named 'acme'"):
        store.get("acme")


def test_errors_never_contain_the_key(tmp_path):
    store = CredentialStore(tmp_path / "c.json")
    with pytest.raises(ConfigError) as info:
        store.save("bad name!", KEY)
    assert KEY not in str(info.value)
    with pytest.raises(ConfigError, match="whitespace"):
        store.save("x", "pk_abc def")
    assert hint("short") == "…" and KEY not in hint(KEY)
    assert redact(f"boom {KEY} boom", [KEY]) == "boom ********** boom"


def test_resolve_connection(tmp_path):
    store = CredentialStore(tmp_path / "c.json")
    store.save("acme", KEY)
    config = {"in": {"type": "klaviyo", "connection": "acme", "data_source": "lists"}, "out": {"mode": "append"}}
    resolved = resolve_connection(config, store)
    assert resolved["in"] == {"type": "klaviyo", "api_token": ApiKey(KEY), "data_source": "lists"}
    assert KEY not in repr(resolved) and KEY not in str(resolved)  # a resolved config prints masked
    assert config["in"]["connection"] == "acme"  # the input is not changed
    inline = {"in": {"type": "klaviyo", "api_token": "pk_inline", "data_source": "lists"}}
    assert resolve_connection(inline, store) == inline
    assert resolve_connection({"result_connection": "acme", "operation": "add"}, store)["api_token"].reveal() == KEY
    with pytest.raises(ConfigError, match="not both"):
        resolve_connection({"in": {"connection": "acme", "api_token": "x"}}, store)
    with pytest.raises(ConfigError, match="no saved authentication named 'nope'"):
        resolve_connection({"in": {"connection": "nope"}}, store)


def run(home, *args, stdin=None, monkeypatch=None):
    if stdin is not None:
        import io

        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    try:
        main(["--home", str(home), *args])
        return 0
    except SystemExit as exc:
        return exc.code or 0


def test_auth_commands_read_the_key_from_stdin_env_or_prompt(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    assert run(home, "auth:create", "a", "--stdin", stdin=KEY + "\n", monkeypatch=monkeypatch) == 0
    monkeypatch.setenv("K", KEY)
    assert run(home, "auth:create", "b", "--from-env", "K") == 0
    monkeypatch.setattr("click.termui.visible_prompt_func", lambda prompt: KEY)  # the hidden prompt
    monkeypatch.setattr("click.termui.hidden_prompt_func", lambda prompt: KEY)
    assert run(home, "auth:create", "c") == 0
    assert run(home, "auth:create", "d", KEY) == 2  # a key is never a command-line argument
    assert run(home, "auth:list") == 0
    assert run(home, "auth:delete", "b") == 0
    assert run(home, "auth:delete", "b") == 2
    out, err = capsys.readouterr()
    assert KEY not in out + err
    assert out.count("pk_…a1b2") >= 3 and "Deleted authentication 'b'" in out
    assert mode(home / "credentials.json") == 0o600
    assert sorted(e["name"] for e in CredentialStore(home / "credentials.json").list()) == ["a", "c"]
    os.chmod(home / "credentials.json", 0o644)
    assert run(home, "auth:list") == 2
    assert "refusing to use it" in capsys.readouterr().err
