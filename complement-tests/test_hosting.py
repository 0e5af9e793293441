"""Hosting: the health check, /metrics, backups, HTTPS with no reverse
proxy (and certificate renewal), JSON logs."""

import json
import re
import shutil
import ssl
import subprocess
import threading
import time

import requests

from conftest import ARTIFACTS, binary, clean_env, free_port, unique
from federation import make_certificate

CS = "/_matrix/client/v3"


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample of the OpenMetrics text, 0 when absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == str(v) for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_health_answers_ok_on_the_client_port(server):
    r = server.request("GET", "/_conduit/health")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok"}


def test_metrics_after_a_workload_on_their_own_port_only(make_server):
    port = free_port()
    server = make_server({"CONDUIT_METRICS_ADDRESS": f"127.0.0.1:{port}"})
    token = server.register(unique())["access_token"]
    room = server.request("POST", f"{CS}/createRoom", token=token, json={}).json()["room_id"]
    for i in range(3):
        r = server.request(
            "PUT", f"{CS}/rooms/{room}/send/m.room.message/t{i}", token=token,
            json={"msgtype": "m.text", "body": f"hello {i}"},
        )
        assert r.status_code == 200, r.text
    assert server.request("GET", "/_matrix/client/versions").status_code == 200

    r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    text = r.text
    send = "/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}"
    assert metric(text, "conduit_http_requests_total", endpoint=send, method="PUT", status=200) == 3, text
    assert metric(text, "conduit_http_requests_total", endpoint="/_matrix/client/versions", status=200) >= 1
    assert metric(text, "conduit_http_request_duration_seconds_count", endpoint=send, method="PUT") == 3
    # createRoom's events and the three messages, all sent here.
    assert metric(text, "conduit_events_total", origin="local") >= 8, text
    assert metric(text, "conduit_database_size_bytes") > 0
    assert metric(text, "conduit_process_resident_memory_bytes") > 1_000_000
    assert metric(text, "conduit_process_cpu_seconds_total") > 0
    assert "conduit_sync_waiters" in text
    assert "conduit_database_block_cache_hits_total" in text
    # Paths with ids are counted by route: no room id in any label.
    assert room not in text

    # Not on the client port: there it is an unknown path like any other.
    r = server.request("GET", "/metrics")
    assert r.status_code == 404 and r.json()["errcode"] == "M_UNRECOGNIZED"
    # The metrics port has nothing else of the server.
    r = requests.get(f"http://127.0.0.1:{port}/_matrix/client/versions", timeout=10)
    assert r.status_code == 404
    assert requests.get(f"http://127.0.0.1:{port}/_conduit/health", timeout=10).json() == {"status": "ok"}


def test_metrics_are_off_by_default(server):
    assert "serving metrics" not in server.log()
    assert server.request("GET", "/metrics").status_code == 404


def run_cli(env: dict, cwd, *words) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary()), *words], env=env, capture_output=True, text=True, timeout=300, cwd=cwd)


def test_backup_while_a_writer_sends_then_restore(make_server, tmp_path):
    server = make_server()
    token = server.register(unique())["access_token"]
    room = server.request("POST", f"{CS}/createRoom", token=token, json={}).json()["room_id"]
    picture = b"not really a picture " * 100
    r = server.request("POST", "/_matrix/media/v3/upload", token=token, data=picture,
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    mxc = r.json()["content_uri"]

    acknowledged: list[tuple[float, str]] = []
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            r = server.request("PUT", f"{CS}/rooms/{room}/send/m.room.message/w{i}", token=token,
                               json={"msgtype": "m.text", "body": f"message {i}"})
            assert r.status_code == 200, r.text
            acknowledged.append((time.monotonic(), r.json()["event_id"]))
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(1.0)
    started = time.monotonic()
    backup = tmp_path / "backup"
    result = run_cli(server.env, server.data_dir, "db", "backup", str(backup))
    time.sleep(0.5)
    stop.set()
    thread.join()
    assert result.returncode == 0, result.stderr
    assert "backup written" in result.stdout
    before = [event for at, event in acknowledged if at < started]
    assert len(before) > 5, "the writer was sending"
    # A second backup into the same directory is refused, changing nothing.
    again = run_cli(server.env, server.data_dir, "db", "backup", str(backup))
    assert again.returncode != 0 and "not empty" in again.stderr

    restored_dir = tmp_path / "restored"
    restored_dir.mkdir()
    restored = make_server({"CONDUIT_DATABASE_PATH": str(restored_dir / "db")}, start=False, data_dir=restored_dir)
    result = run_cli(restored.env, restored_dir, "db", "restore", str(backup))
    assert result.returncode == 0, result.stderr
    # Restoring over a database is refused.
    again = run_cli(restored.env, restored_dir, "db", "restore", str(backup))
    assert again.returncode != 0 and "already exists" in again.stderr
    restored.start()

    for event in before:
        r = restored.request("GET", f"{CS}/rooms/{room}/event/{event}", token=token)
        assert r.status_code == 200, (event, r.text)
    media = mxc.removeprefix("mxc://")
    r = restored.request("GET", f"/_matrix/client/v1/media/download/{media}", token=token)
    assert r.status_code == 200 and r.content == picture


def test_backup_of_a_stopped_server(make_server, tmp_path):
    server = make_server()
    token = server.register(unique())["access_token"]
    server.stop()
    result = run_cli(server.env, server.data_dir, "db", "backup", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "b" / "db" / "CURRENT").exists()
    server.start()
    assert server.request("GET", f"{CS}/account/whoami", token=token).status_code == 200


def served_certificate(port: int) -> str:
    return ssl.get_server_certificate(("127.0.0.1", port), timeout=5)


def test_https_with_only_server_name_tls_and_ports(tmp_path):
    """The config an admin writes for a server with no reverse proxy: both
    APIs over HTTPS from one listener, and a renewed certificate served
    without a restart."""
    cert, key = make_certificate(tmp_path / "tls")
    port, tls_port = free_port(), free_port()
    config = tmp_path / "conduit.toml"
    config.write_text(
        "[global]\n"
        f'server_name = "127.0.0.1:{tls_port}"\n'
        f"port = {port}\n"
        f"federation_port = {tls_port}\n"
        f'tls = {{ certs = "{cert}", key = "{key}" }}\n'
    )
    env = clean_env()
    log_path = ARTIFACTS / "test_https_with_only_server_name_tls_and_ports.log"
    ARTIFACTS.mkdir(exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(binary()), "--config", str(config)], env=env, cwd=tmp_path,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"https://127.0.0.1:{tls_port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                r = requests.get(f"{base}/_matrix/client/versions", verify=str(cert), timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        assert r.status_code == 200 and "v1.11" in r.json()["versions"]
        r = requests.get(f"{base}/_matrix/federation/v1/version", verify=str(cert), timeout=5)
        assert r.status_code == 200 and r.json()["server"]["name"]
        r = requests.get(f"{base}/_matrix/key/v2/server", verify=str(cert), timeout=5)
        assert r.json()["server_name"] == f"127.0.0.1:{tls_port}"
        assert requests.get(f"{base}/_conduit/health", verify=str(cert), timeout=5).json()["status"] == "ok"
        # A real client call over HTTPS: the first account, with the token the log offers.
        token = re.search(r"registration token (\S+?);", log_path.read_text()).group(1)
        body = {"username": "admin", "password": "correct horse battery",
                "auth": {"type": "m.login.registration_token", "token": token}}
        r = requests.post(f"{base}{CS}/register", json=body, verify=str(cert), timeout=30)
        if r.status_code == 401:
            body["auth"]["session"] = r.json()["session"]
            r = requests.post(f"{base}{CS}/register", json=body, verify=str(cert), timeout=30)
        assert r.status_code == 200, r.text
        r = requests.get(f"{base}{CS}/account/whoami", verify=str(cert), timeout=5,
                         headers={"Authorization": f"Bearer {r.json()['access_token']}"})
        assert r.json()["user_id"] == f"@admin:127.0.0.1:{tls_port}"

        # Renewal: new files in place, served within a few seconds, no restart.
        before = served_certificate(tls_port)
        new_cert, new_key = make_certificate(tmp_path / "renewed")
        shutil.copy(new_key, key)
        shutil.copy(new_cert, cert)
        deadline = time.monotonic() + 20
        while served_certificate(tls_port) == before:
            assert time.monotonic() < deadline, "the renewed certificate was not served:\n" + log_path.read_text()
            time.sleep(0.5)
        assert ssl.PEM_cert_to_DER_cert(served_certificate(tls_port)) == \
            ssl.PEM_cert_to_DER_cert(new_cert.read_text())
        assert "TLS certificate reloaded" in log_path.read_text()
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_json_logs_one_object_per_line(make_server):
    server = make_server({"CONDUIT_LOG_FORMAT": "json"}, start=False)
    # The log is appended to: lines of an earlier run are not this one's.
    server.log_path.unlink(missing_ok=True)
    server.start()
    assert server.request("GET", "/_matrix/client/versions").status_code == 200
    server.stop()
    lines = [line for line in server.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert all({"timestamp", "level", "fields"} <= record.keys() for record in records)
    requests_logged = [r for r in records if r.get("target") == "conduit::request"]
    assert any("GET /_matrix/client/versions 200" in r["fields"]["message"] for r in requests_logged), lines
