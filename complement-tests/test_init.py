"""`conduit init DOMAIN`: the first-run setup writes a config that starts a
closed server, and its checks say what the world is missing, one sentence
per problem."""

import re
import subprocess

import requests

from conftest import ARTIFACTS, binary, clean_env, free_port
from federation import federation_env

CS = "/_matrix/client/v3"


def init(cwd, *args, **env) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary()), *args], cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=120)


def finding(output: str, verdict: str, pattern: str) -> str:
    """The text of the one finding of this verdict that matches."""
    found = [m.group(1) for m in re.finditer(rf"^\s*{verdict}  (.*)$", output, re.M) if re.search(pattern, m.group(1))]
    assert len(found) == 1, output
    return found[0]


def test_init_writes_a_config_that_starts_a_closed_server(tmp_path):
    domain = "no-such-host.invalid"
    done = init(tmp_path, "init", domain)
    assert done.returncode == 0, done.stderr
    config = tmp_path / "conduit.toml"
    assert f"Wrote {config.name} for {domain}" in done.stdout
    text = config.read_text()
    assert f'server_name = "{domain}"' in text
    assert f'database_path = "{tmp_path / "conduit-data"}"' in text
    assert text.count("\n# ") > 10, "the config explains its keys"

    # The missing DNS record, in one sentence that says what to do.
    dns = finding(done.stdout, "missing", "DNS record")
    assert dns.startswith(f"{domain} has no DNS record (A or AAAA): add one")
    assert dns.endswith(".") and ". " not in dns, dns
    assert re.match(r"\d+ things are missing", done.stdout.splitlines()[-2]), done.stdout

    # The config starts a server (the port moved off 8008 for the test).
    port = free_port()
    log_path = ARTIFACTS / "test_init_server.log"
    ARTIFACTS.mkdir(exist_ok=True)
    log_path.unlink(missing_ok=True)
    env = clean_env(CONDUIT_PORT=str(port))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(binary()), "--config", str(config), "serve"], cwd=tmp_path, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        health = None
        for _ in range(100):
            assert proc.poll() is None, log_path.read_text()
            health = subprocess.run([str(binary()), "--config", str(config), "health"], env=env,
                                    capture_output=True, text=True, timeout=30)
            if health.returncode == 0:
                break
        assert health.returncode == 0 and health.stdout.strip() == "healthy", health.stderr
        assert (tmp_path / "conduit-data" / "CURRENT").exists()
        log = log_path.read_text()
        assert "create the first account" in log and "development" not in log, log
        # Closed: registration asks for a token.
        r = requests.post(f"http://127.0.0.1:{port}{CS}/register", timeout=30,
                          json={"username": "someone", "password": "correct horse battery"})
        assert r.status_code == 401
        assert [["m.login.registration_token"]] == [f["stages"] for f in r.json()["flows"]]
    finally:
        proc.kill()
        proc.wait()

    # Again: the config is kept, and checked again; another name is refused.
    again = init(tmp_path, "init", domain)
    assert again.returncode == 0 and "exists: kept as it is" in again.stdout
    assert config.read_text() == text
    other = init(tmp_path, "init", "example.org")
    assert other.returncode == 1 and f"is for {domain}, not example.org" in other.stderr
    assert config.read_text() == text
    bad = init(tmp_path, "--config", str(tmp_path / "bad.toml"), "init", "not a name!")
    assert bad.returncode == 1 and "is not a server name" in bad.stderr
    assert not (tmp_path / "bad.toml").exists()


def test_init_checks_the_federation_port_and_its_certificate(tmp_path, make_server):
    env = federation_env(tmp_path / "tls")
    # A leaf (CA:FALSE) that a client can be told to trust, as a public CA's leaf.
    cert, key = tmp_path / "leaf.crt", tmp_path / "leaf.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    env.update(CONDUIT_TLS__CERTS=str(cert), CONDUIT_TLS__KEY=str(key))
    server = make_server(env)
    name = env["CONDUIT_SERVER_NAME"]
    config = str(tmp_path / "setup" / "conduit.toml")
    (tmp_path / "setup").mkdir()

    # A self-signed certificate is not one other servers accept.
    done = init(tmp_path, "--config", config, "init", name)
    assert done.returncode == 0, done.stderr
    assert "the port in the name" in finding(done.stdout, "note", "other servers connect to")
    bad = finding(done.stdout, "missing", "HTTPS fails")
    assert bad.startswith(f"{name} accepts connections") and "certificate" in bad.lower(), bad
    # No DNS check for an IP literal; the client API is not on port 443 here.
    assert "DNS" not in done.stdout
    finding(done.stdout, "missing", "apps cannot reach the client API")

    # Trusted (as a public CA's would be), it passes.
    done = init(tmp_path, "--config", config, "init", name, SSL_CERT_FILE=str(cert))
    ok = finding(done.stdout, "ok", "answers over HTTPS")
    assert re.fullmatch(rf"{re.escape(name)} answers over HTTPS as conduit \S+, with a valid certificate\.", ok), ok

    server.stop()
    done = init(tmp_path, "--config", config, "init", name)
    down = finding(done.stdout, "missing", "nothing answers")
    port = name.rsplit(":", 1)[1]
    assert down.startswith(f"nothing answers on {name}: start the server, and open TCP port {port}"), down
