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


def test_kill_9_at_random_moments_while_sending_loses_no_acknowledged_message(make_server):
    """20 rounds: send messages until a kill -9 at a random moment; after the
    restart every message that got a 200 is in /messages, in order."""
    import random
    from urllib.parse import quote

    server = make_server()
    token = server.register(unique())["access_token"]
    room = server.request("POST", f"{CS}/createRoom", token=token, json={}).json()["room_id"]
    acknowledged: list[str] = []
    rng = random.Random(20261122)
    for round_no in range(20):
        stop = threading.Event()

        def sender():
            i = 0
            while not stop.is_set():
                try:
                    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/send/m.room.message/r{round_no}m{i}", token=token, json={"msgtype": "m.text", "body": f"{round_no}.{i}"})
                except Exception:
                    return
                if r.status_code == 200:
                    acknowledged.append(r.json()["event_id"])
                i += 1

        thread = threading.Thread(target=sender)
        thread.start()
        time.sleep(rng.uniform(0.05, 0.4))
        server.kill()
        stop.set()
        thread.join()
        server.start()

    stored: list[str] = []
    params = {"dir": "f", "limit": 500, "filter": '{"types": ["m.room.message"]}'}
    while True:
        r = server.request("GET", f"{CS}/rooms/{quote(room)}/messages", token=token, params=params)
        assert r.status_code == 200, r.text
        stored += [e["event_id"] for e in r.json()["chunk"]]
        if "end" not in r.json():
            break
        params["from"] = r.json()["end"]
    assert len(acknowledged) > 20, "the rounds sent too little to mean anything"
    positions = [stored.index(event_id) for event_id in acknowledged]  # ValueError = a lost message
    assert positions == sorted(positions), "acknowledged messages must stay in order"
