"""Push notifications through a gateway: pushers are set, listed and
removed; a notifying event reaches the gateway in the Push Gateway API
format (full and event_id_only); a receipt sends a badge update; a
failing gateway is retried and a push queued before `kill -9` is sent
after the restart; `rejected` pushkeys lose their pusher; and
`/notifications` lists what notified, read or not."""

import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import free_port, unique

NOTIFY = "/_matrix/push/v1/notify"
# The gateway runs on loopback, which pushes may not reach by default.
LOOPBACK_ALLOWED = {"CONDUIT_URL_PREVIEW_IP_RANGE_ALLOWLIST": '["127.0.0.1/32"]'}


class Gateway:
    """A push gateway on 127.0.0.1: records every notify body; `fail` makes
    it answer 500 that many times; `reject` lists pushkeys it rejects."""

    def __init__(self, port: int | None = None):
        self.received: "queue.Queue[dict]" = queue.Queue()
        self.fail = 0
        self.reject: list[str] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != NOTIFY:
                    self.send_response(404)
                    self.end_headers()
                    return
                if gateway.fail > 0:
                    gateway.fail -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                gateway.received.put(body["notification"])
                answer = json.dumps({"rejected": gateway.reject}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", port or free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_port}{NOTIFY}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def next(self, timeout: float = 15) -> dict:
        return self.received.get(timeout=timeout)

    def event_push(self, event_id: str, timeout: float = 15) -> dict:
        """The next push naming `event_id` (badge updates are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            push = self.next(max(0.1, deadline - time.monotonic()))
            if push.get("event_id") == event_id:
                return push

    def close(self):
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def gateway():
    g = Gateway()
    yield g
    g.close()


def pusher(gateway_url: str, pushkey: str = "pushkey-1", **data) -> dict:
    return {
        "kind": "http", "app_id": "org.example.push", "pushkey": pushkey,
        "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
        "data": {"url": gateway_url, "custom": "kept", **data},
    }


def set_pusher(server, token: str, body: dict):
    return server.request("POST", "/_matrix/client/v3/pushers/set", token, json=body)


def room_with(server, alice: dict, bob: dict, name: str | None = "Push room") -> str:
    body = {"preset": "private_chat", "invite": [bob["user_id"]]}
    if name:
        body["name"] = name
    r = server.request("POST", "/_matrix/client/v3/createRoom", alice["access_token"], json=body)
    room_id = r.json()["room_id"]
    r = server.request("POST", f"/_matrix/client/v3/join/{room_id}", bob["access_token"], json={})
    assert r.status_code == 200, r.text
    return room_id


def send(server, user: dict, room_id: str, body: str = "hello") -> str:
    r = server.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}",
                       user["access_token"], json={"msgtype": "m.text", "body": body})
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def accounts(server):
    alice = server.register(unique("alice"))
    bob = server.register(unique("bob"))
    server.request("PUT", f"/_matrix/client/v3/profile/{alice['user_id']}/displayname",
                   alice["access_token"], json={"displayname": "Alice A."})
    return alice, bob


def test_pushes_reach_the_gateway_and_notifications_are_listed(make_server, gateway):
    server = make_server(LOOPBACK_ALLOWED)
    alice, bob = accounts(server)
    token = bob["access_token"]
    assert set_pusher(server, token, pusher(gateway.url)).json() == {}
    listed = server.request("GET", "/_matrix/client/v3/pushers", token).json()["pushers"]
    assert listed == [pusher(gateway.url)]

    room_id = room_with(server, alice, bob)
    event_id = send(server, alice, room_id, "ring ring")
    push = gateway.event_push(event_id)
    assert push["room_id"] == room_id and push["type"] == "m.room.message"
    assert push["sender"] == alice["user_id"] and push["sender_display_name"] == "Alice A."
    assert push["room_name"] == "Push room"
    assert push["content"]["body"] == "ring ring"
    assert push["counts"] == {"unread": 1}
    assert push["prio"] == "high"
    [device] = push["devices"]
    assert device["app_id"] == "org.example.push" and device["pushkey"] == "pushkey-1"
    assert device["data"] == {"custom": "kept"}
    assert device["tweaks"]["sound"] == "default"
    assert isinstance(device["pushkey_ts"], int)

    # The history lists it, unread; after a receipt it is read and the
    # gateway hears the badge drop to 0.
    notes = server.request("GET", "/_matrix/client/v3/notifications", token).json()
    [note] = [n for n in notes["notifications"] if n["event"]["event_id"] == event_id]
    assert note["read"] is False and note["room_id"] == room_id and "notify" in note["actions"]
    assert "room_id" not in note["event"] and note["ts"] > 0
    r = server.request("POST", f"/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{event_id}", token, json={})
    assert r.status_code == 200
    badge = gateway.next()
    assert badge["counts"] == {"unread": 0} and "event_id" not in badge
    assert badge["devices"][0]["pushkey"] == "pushkey-1"
    notes = server.request("GET", "/_matrix/client/v3/notifications", token).json()
    [note] = [n for n in notes["notifications"] if n["event"]["event_id"] == event_id]
    assert note["read"] is True

    # Alice's own message does not push her; Bob's pusher goes with kind null.
    r = set_pusher(server, token, {"kind": None, "app_id": "org.example.push", "pushkey": "pushkey-1"})
    assert r.status_code == 200
    assert server.request("GET", "/_matrix/client/v3/pushers", token).json() == {"pushers": []}
    quiet = send(server, alice, room_id, "nobody hears this")
    with pytest.raises(queue.Empty):
        while gateway.next(timeout=2).get("event_id") != quiet:
            pass


def test_event_id_only_pushes_and_invites(make_server, gateway):
    server = make_server(LOOPBACK_ALLOWED)
    alice, bob = accounts(server)
    set_pusher(server, bob["access_token"], pusher(gateway.url, format="event_id_only"))
    r = server.request("POST", "/_matrix/client/v3/createRoom", alice["access_token"],
                       json={"preset": "private_chat", "name": "Invite room"})
    room_id = r.json()["room_id"]
    r = server.request("POST", f"/_matrix/client/v3/rooms/{room_id}/invite", alice["access_token"],
                       json={"user_id": bob["user_id"]})
    assert r.status_code == 200
    # The invite pushes the invitee (who is not a member yet).
    invite = gateway.next()
    assert set(invite) == {"event_id", "room_id", "prio", "counts", "devices"}
    assert invite["room_id"] == room_id and invite["counts"] == {"unread": 1}
    assert "tweaks" not in invite["devices"][0]
    assert invite["devices"][0]["data"] == {"custom": "kept", "format": "event_id_only"}
    notes = server.request("GET", "/_matrix/client/v3/notifications", bob["access_token"]).json()
    assert [n["event"]["type"] for n in notes["notifications"]] == ["m.room.member"]
    assert notes["notifications"][0]["read"] is False


def test_a_failing_gateway_is_retried_and_the_queue_survives_kill_9(make_server, gateway):
    server = make_server(LOOPBACK_ALLOWED)
    alice, bob = accounts(server)
    set_pusher(server, bob["access_token"], pusher(gateway.url))
    room_id = room_with(server, alice, bob)
    gateway.fail = 2
    first = send(server, alice, room_id, "retried")
    assert gateway.event_push(first)["content"]["body"] == "retried"
    assert "push failed: HTTP 500" in server.log()

    # Gateway gone: the push waits in the queue through a kill -9.
    port = gateway.http.server_port
    gateway.close()
    second = send(server, alice, room_id, "after the crash")
    time.sleep(1)
    server.kill()
    back = Gateway(port)
    try:
        server.start()
        assert back.event_push(second, timeout=20)["content"]["body"] == "after the crash"
    finally:
        back.close()


def test_rejected_pushkeys_and_append(make_server, gateway):
    server = make_server(LOOPBACK_ALLOWED)
    alice, bob = accounts(server)
    carol = server.register(unique("carol"))
    # Without append, the same app and pushkey move to the new user.
    set_pusher(server, carol["access_token"], pusher(gateway.url, pushkey="shared"))
    set_pusher(server, bob["access_token"], pusher(gateway.url, pushkey="shared"))
    assert server.request("GET", "/_matrix/client/v3/pushers", carol["access_token"]).json()["pushers"] == []
    # With append, both keep it.
    set_pusher(server, carol["access_token"], {**pusher(gateway.url, pushkey="shared"), "append": True})
    assert len(server.request("GET", "/_matrix/client/v3/pushers", carol["access_token"]).json()["pushers"]) == 1
    assert len(server.request("GET", "/_matrix/client/v3/pushers", bob["access_token"]).json()["pushers"]) == 1

    room_id = room_with(server, alice, bob)
    assert gateway.next()["room_id"] == room_id  # the invite, taken
    gateway.reject = ["shared"]
    event_id = send(server, alice, room_id)
    gateway.event_push(event_id)
    deadline = time.monotonic() + 10
    while server.request("GET", "/_matrix/client/v3/pushers", bob["access_token"]).json()["pushers"]:
        assert time.monotonic() < deadline, "the rejected pusher stayed"
        time.sleep(0.2)
    assert len(server.request("GET", "/_matrix/client/v3/pushers", carol["access_token"]).json()["pushers"]) == 1


def test_logging_out_removes_the_devices_pushers(make_server, gateway):
    server = make_server(LOOPBACK_ALLOWED)
    bob = server.register(unique("bob"))
    set_pusher(server, bob["access_token"], pusher(gateway.url))
    other = server.login(bob["user_id"]).json()
    set_pusher(server, other["access_token"], pusher(gateway.url, pushkey="other-phone"))
    assert server.request("POST", "/_matrix/client/v3/logout", bob["access_token"], json={}).status_code == 200
    [left] = server.request("GET", "/_matrix/client/v3/pushers", other["access_token"]).json()["pushers"]
    assert left["pushkey"] == "other-phone"


def test_bad_pushers_are_refused(make_server):
    server = make_server()
    bob = server.register(unique("bob"))
    token = bob["access_token"]

    def refused(body, errcode):
        r = set_pusher(server, token, body)
        assert r.status_code == 400 and r.json()["errcode"] == errcode, r.text

    good = pusher("https://push.example.org/_matrix/push/v1/notify")
    refused({k: v for k, v in good.items() if k != "lang"}, "M_MISSING_PARAM")
    refused({**good, "data": {}}, "M_MISSING_PARAM")
    refused(pusher("https://push.example.org/notify"), "M_INVALID_PARAM")
    refused({**good, "kind": "email"}, "M_UNRECOGNIZED")
    refused({**good, "kind": "carrier-pigeon"}, "M_INVALID_PARAM")
    refused({**good, "app_id": "x" * 65}, "M_INVALID_PARAM")
    # Loopback is a denied range unless the config allows it.
    refused(pusher(f"http://127.0.0.1:{free_port()}/_matrix/push/v1/notify"), "M_INVALID_PARAM")
    r = server.request("POST", "/_matrix/client/v3/pushers/set", token, data="not json")
    assert r.status_code == 400 and r.json()["errcode"] == "M_NOT_JSON"
    assert server.request("GET", "/_matrix/client/v3/pushers", token).json() == {"pushers": []}
    r = server.request("GET", "/_matrix/client/v3/notifications?from=nonsense", token)
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"


def test_notifications_page_and_filter_highlights(make_server):
    server = make_server()
    alice, bob = accounts(server)
    room_id = room_with(server, alice, bob)
    sent = [send(server, alice, room_id, f"message {i}") for i in range(5)]
    plain = send(server, alice, room_id, "no mention here")
    r = server.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}",
                       alice["access_token"],
                       json={"msgtype": "m.text", "body": f"{bob['user_id']} look",
                             "m.mentions": {"user_ids": [bob["user_id"]]}})
    highlight = r.json()["event_id"]
    token = bob["access_token"]
    page = server.request("GET", "/_matrix/client/v3/notifications?limit=3", token).json()
    assert [n["event"]["event_id"] for n in page["notifications"]] == [highlight, plain, sent[4]]
    rest = server.request("GET", f"/_matrix/client/v3/notifications?from={page['next_token']}", token).json()
    # The rest: the older messages, then the invite that started it all.
    assert [n["event"]["event_id"] for n in rest["notifications"][:-1]] == sent[3::-1]
    assert rest["notifications"][-1]["event"]["type"] == "m.room.member"
    assert "next_token" not in rest
    only = server.request("GET", "/_matrix/client/v3/notifications?only=highlight", token).json()
    assert [n["event"]["event_id"] for n in only["notifications"]] == [highlight]
