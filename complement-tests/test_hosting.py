"""What an admin watches the server with: the health check and /metrics."""

import re
import subprocess
import threading
import time

import requests

from conftest import binary, free_port, unique

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
