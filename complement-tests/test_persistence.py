"""Nothing acknowledged is lost: across restarts and `kill -9`."""

import subprocess
import threading
import time

from conftest import binary, unique

CS = "/_matrix/client/v3"


def test_data_survives_restart(make_server):
    server = make_server()
    name = unique()
    reg = server.register(name)
    token = reg["access_token"]
    path = f"{CS}/user/{reg['user_id']}/account_data/org.example"
    assert server.request("PUT", path, token=token, json={"kept": True}).status_code == 200
    server.stop()
    server.start()
    assert server.request("GET", f"{CS}/account/whoami", token=token).json()["user_id"] == reg["user_id"]
    assert server.request("GET", path, token=token).json() == {"kept": True}
    assert server.login(name).status_code == 200


def test_kill_9_right_after_register_loses_nothing(make_server):
    server = make_server()
    for _ in range(5):
        name = unique()
        reg = server.register(name)
        server.kill()
        server.start()
        assert server.login(name).status_code == 200, server.log()
        r = server.request("GET", f"{CS}/account/whoami", token=reg["access_token"])
        assert r.status_code == 200, r.text


def test_kill_9_during_concurrent_registrations(make_server):
    """Every registration that got a 200 before the kill is there after it."""
    server = make_server()
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def register_loop():
        while not stop.is_set():
            name = unique()
            try:
                r = server.request("POST", f"{CS}/register", json={"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}})
            except Exception:
                return
            if r.status_code == 200:
                with lock:
                    acknowledged.append(name)

    threads = [threading.Thread(target=register_loop) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()
    stop.set()
    for t in threads:
        t.join()
    server.start()
    assert len(acknowledged) >= 12, server.log()
    for name in acknowledged:
        assert server.login(name, "pw").status_code == 200, name


def test_second_server_on_same_database_is_refused(make_server, tmp_path):
    server = make_server()
    env = dict(server.env)
    env["CONDUIT_PORT"] = "0"
    result = subprocess.run([str(binary())], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode != 0
    assert "already in use" in (result.stdout + result.stderr)
