"""The binary's command line and configuration handling."""

import subprocess

import requests

from conftest import binary, clean_env, free_port, unique


def run(args, env=None, cwd=None, timeout=60):
    base = clean_env()
    return subprocess.run([str(binary()), *args], env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_help_lists_subcommands():
    result = run(["--help"])
    assert result.returncode == 0
    assert "serve" in result.stdout and "db" in result.stdout


def test_invalid_value_names_the_key(tmp_path):
    config = tmp_path / "conduit.toml"
    config.write_text('[global]\nserver_name = "example.org"\nport = "eighty"\n')
    result = run(["--config", str(config)])
    assert result.returncode != 0
    assert "port" in result.stderr, result.stderr

    result = run([], env={"CONDUIT_PORT": "notanumber"}, cwd=tmp_path)
    assert result.returncode != 0
    assert "port" in result.stderr and "CONDUIT_PORT" in result.stderr, result.stderr


def test_missing_config_file_is_an_error(tmp_path):
    result = run(["--config", str(tmp_path / "nope.toml")])
    assert result.returncode != 0
    assert "nope.toml" in result.stderr


def test_config_file_with_unknown_keys_serves_and_warns(tmp_path):
    port = free_port()
    config = tmp_path / "conduit.toml"
    config.write_text(
        "[global]\n"
        'server_name = "example.test"\n'
        'database_backend = "rocksdb"\n'
        f'database_path = "{tmp_path / "db"}"\n'
        f"port = {port}\n"
        'address = "127.0.0.1"\n'
        "frobnicate = true\n"
        "allow_encryption = true\n"
    )
    proc = subprocess.Popen([str(binary()), "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                requests.get(url + "/_matrix/client/versions", timeout=1)
                break
            except requests.ConnectionError:
                import time

                time.sleep(0.05)
        # Production default: registration needs a token; on a first start
        # the only one is the admin invite the server logs.
        r = requests.post(url + "/_matrix/client/v3/register", json={"username": unique(), "password": "pw"}, timeout=10)
        assert r.status_code == 401 and r.json()["flows"] == [{"stages": ["m.login.registration_token"]}]
        wk = requests.get(url + "/.well-known/matrix/client", timeout=10).json()
        assert wk["m.homeserver"]["base_url"] == "https://example.test"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "frobnicate" in out
    assert "allow_encryption" in out


def test_db_subcommands_read_a_stopped_server(make_server):
    server = make_server()
    server.register(unique("dbuser"))
    server.stop()
    env = {"CONDUIT_DATABASE_PATH": server.env["CONDUIT_DATABASE_PATH"]}
    tables = run(["db", "tables"], env=env)
    assert tables.returncode == 0, tables.stderr
    assert "accounts" in tables.stdout and "access_tokens" in tables.stdout
    rows = run(["db", "scan", "accounts"], env=env)
    assert rows.returncode == 0, rows.stderr
    assert '"@dbuser' in rows.stdout and "password_hash" in rows.stdout
    bad = run(["db", "scan", "nope"], env=env)
    assert bad.returncode != 0 and "unknown table" in bad.stderr
