"""ACME: a server with `acme = true` gets its certificate from a real ACME
CA (acme2certifier from PyPI, acme_ca.py) by TLS-ALPN-01 on port 443,
serves it on 443 and the federation port, renews it before it expires,
and serves the stored one at once after a restart."""

import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import ARTIFACTS, binary, clean_env, free_port

HERE = Path(__file__).resolve().parent
CA_PYTHON = HERE / ".venv-acme" / "bin" / "python"


def port_443_free() -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 443))
            return True
        except OSError:
            return False


@pytest.fixture
def acme_ca(tmp_path):
    """(directory URL, CA certificate path), certificates living 45 s."""
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "acme-ca.log", "w")
    proc = subprocess.Popen([str(CA_PYTHON), str(HERE / "acme_ca.py"), "--workdir", str(tmp_path / "ca"),
                             "--port", str(free_port()), "--cert-seconds", "45"],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    ready = proc.stdout.readline().split()
    assert ready and ready[0] == "READY", (ARTIFACTS / "acme-ca.log").read_text()
    yield ready[1], ready[2]
    proc.kill()
    proc.wait()


def served(port: int, ca: str) -> bytes | None:
    """The DER certificate served on 127.0.0.1:port if it verifies against `ca`."""
    context = ssl.create_default_context(cafile=ca)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as tcp:
            with context.wrap_socket(tcp, server_hostname="127.0.0.1") as tls:
                return tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None


def start(config: Path, log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen([str(binary()), "--config", str(config)], env=clean_env(), cwd=config.parent,
                                stdout=log, stderr=subprocess.STDOUT)


def wait_for(what, timeout: float, log_path: Path, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log_path.read_text()
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.25)


@pytest.mark.skipif(not port_443_free(), reason="TLS-ALPN-01 validation comes to port 443, which is taken or not ours")
def test_certificate_obtained_served_renewed_and_kept(tmp_path, acme_ca):
    directory, ca = acme_ca
    port, federation_port = free_port(), free_port()
    config = tmp_path / "conduit.toml"
    config.write_text(
        "[global]\n"
        f'server_name = "127.0.0.1:{federation_port}"\n'
        f'database_path = "{tmp_path / "db"}"\n'
        f"port = {port}\n"
        f"federation_port = {federation_port}\n"
        "[global.tls]\n"
        "acme = true\n"
        f'acme_directory = "{directory}"\n'
        f'acme_ca_certificate = "{ca}"\n'
    )
    log_path = ARTIFACTS / "test_acme_server.log"
    log_path.unlink(missing_ok=True)
    proc = start(config, log_path)
    try:
        # Obtained by TLS-ALPN-01 and served on 443 and the federation port.
        first = wait_for(lambda: served(443, ca), 60, log_path, proc)
        assert served(federation_port, ca) == first
        r = requests.get("https://127.0.0.1/_matrix/client/versions", verify=ca, timeout=10)
        assert r.status_code == 200 and r.json()["versions"]
        r = requests.get(f"https://127.0.0.1:{federation_port}/_matrix/key/v2/server", verify=ca, timeout=10)
        assert r.json()["server_name"] == f"127.0.0.1:{federation_port}"
        log = log_path.read_text()
        assert "ACME: account created" in log and "ACME: new certificate for 127.0.0.1 is served" in log
        stored = tmp_path / "db" / "acme"
        assert {"account.json", "certificate.pem", "key.pem"} <= {p.name for p in stored.iterdir()}

        # Renewed after two thirds of the 45 s, before the first one expires.
        issued = time.monotonic()
        second = wait_for(lambda: (c := served(443, ca)) != first and c, 45, log_path, proc)
        assert time.monotonic() - issued < 40, "renewed only after expiry"
        assert served(federation_port, ca) == second
        assert log_path.read_text().count("ACME: new certificate for 127.0.0.1 is served") == 2

        # A restart serves the stored certificate from the first handshake.
        proc.kill()
        proc.wait()
        proc = start(config, log_path)
        again = wait_for(lambda: served(443, ca), 20, log_path, proc)
        assert again == second
        log = log_path.read_text()
        assert log.count("ACME: account created") == 1
        assert log.count("ACME: new certificate") == 2
    finally:
        proc.kill()
        proc.wait()


def test_unreachable_ca_leaves_the_server_running_and_retries(tmp_path):
    port, federation_port, https_port, dead = free_port(), free_port(), free_port(), free_port()
    config = tmp_path / "conduit.toml"
    config.write_text(
        "[global]\n"
        'server_name = "chat.example.test"\n'
        f'database_path = "{tmp_path / "db"}"\n'
        f"port = {port}\n"
        f"federation_port = {federation_port}\n"
        "[global.tls]\n"
        "acme = true\n"
        f"https_port = {https_port}\n"
        f'acme_directory = "https://127.0.0.1:{dead}/directory"\n'
    )
    log_path = ARTIFACTS / "test_acme_unreachable.log"
    log_path.unlink(missing_ok=True)
    proc = start(config, log_path)
    try:
        wait_for(lambda: "trying again in 30 s" in log_path.read_text(), 30, log_path, proc)
        log = log_path.read_text()
        assert f"ACME: no certificate for chat.example.test from https://127.0.0.1:{dead}/directory" in log
        # Plain HTTP serves on; the TLS ports listen but have no certificate yet.
        assert requests.get(f"http://127.0.0.1:{port}/_conduit/health", timeout=5).json() == {"status": "ok"}
        assert served(https_port, None) is None
        assert f"serving apps and federation over TLS on https://127.0.0.1:{https_port}" in log
    finally:
        proc.kill()
        proc.wait()


def test_acme_and_certificate_files_do_not_mix(tmp_path):
    config = tmp_path / "conduit.toml"
    config.write_text('[global]\nserver_name = "x.test"\n[global.tls]\nacme = true\ncerts = "/a.pem"\nkey = "/b.pem"\n')
    done = subprocess.run([str(binary()), "--config", str(config), "health"], env=clean_env(),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "remove `certs` and `key`" in done.stderr
    config.write_text('[global]\nserver_name = "x.test"\n[global.tls]\ncerts = "/a.pem"\n')
    done = subprocess.run([str(binary()), "--config", str(config), "health"], env=clean_env(),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "needs `certs` and `key`" in done.stderr
