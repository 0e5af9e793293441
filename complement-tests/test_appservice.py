"""Application services: a registration file gives an appservice its
namespace; it registers and logs in puppets with
`m.login.application_service`, acts as them with `?user_id=`, and is
refused outside its namespace; others are refused its exclusive names
(`M_EXCLUSIVE`); it receives every event of its rooms by transaction, in
order and once, with its hs_token, across its own downtime and a `kill -9`
of the server; it pings and is pinged; `conduit admin appservice`
registers, lists and unregisters."""

import json
import queue
import re
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote

import pytest

from conftest import binary, free_port, unique

AS_TOKEN = "as-token-" + uuid.uuid4().hex
HS_TOKEN = "hs-token-" + uuid.uuid4().hex
IRC_PROTOCOL = {
    "user_fields": ["network", "nickname"], "location_fields": ["network", "channel"], "icon": "mxc://example.org/irc",
    "field_types": {"network": {"regexp": "[a-z.]+", "placeholder": "irc.example.org"},
                    "nickname": {"regexp": ".+", "placeholder": "alice"},
                    "channel": {"regexp": "#.+", "placeholder": "#matrix"}},
    "instances": [{"desc": "Example IRC", "fields": {"network": "irc.example.org"}, "network_id": "example"}],
}
TXN_PATH = re.compile(r"^/_matrix/app/v1/transactions/([^/?]+)$")


def next_from(received: "queue.Queue[dict]", wanted, timeout: float) -> dict:
    """The next item of `received` that is `wanted` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        item = received.get(timeout=max(0.1, deadline - time.monotonic()))
        if wanted(item):
            return item


class Bridge:
    """The appservice's HTTP side on 127.0.0.1: records transactions (by
    id, as an appservice dedupes them), refuses a wrong hs_token, and
    answers 500 `fail` times (`lose` times after taking the events, as if
    the answer got lost)."""

    def __init__(self, port: int | None = None):
        self.transactions: list[tuple[str, list[dict]]] = []
        self.seen_txns: dict[str, tuple] = {}
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.pings: "queue.Queue[dict]" = queue.Queue()
        self.ephemeral: "queue.Queue[dict]" = queue.Queue()
        self.to_device: "queue.Queue[dict]" = queue.Queue()
        # MSC3202 fields of each transaction that had any.
        self.device_news: "queue.Queue[dict]" = queue.Queue()
        self.wrong_tokens = 0
        self.alias_queries: list[str] = []
        self.thirdparty_queries: list[tuple[str, str]] = []
        self.user_queries: list[str] = []
        self.server = None
        self.fail = 0
        self.lose = 0
        self.lock = threading.Lock()
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def body(self) -> dict:
                return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

            def authorized(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {HS_TOKEN}":
                    bridge.wrong_tokens += 1
                    self.answer(403, {"errcode": "M_FORBIDDEN"})
                    return False
                return True

            def do_PUT(self):
                match = TXN_PATH.match(self.path)
                body = self.body()
                if not match:
                    return self.answer(404, {"errcode": "M_UNRECOGNIZED"})
                if not self.authorized():
                    return
                txn_id = match.group(1)
                with bridge.lock:
                    if bridge.fail > 0:
                        bridge.fail -= 1
                        return self.answer(500, {})
                    ids = [e["event_id"] for e in body["events"]]
                    bridge.transactions.append((txn_id, ids))
                    # What a retry must repeat: the same events (their
                    # `unsigned.age` grows) and everything else.
                    same = (ids, {k: v for k, v in body.items() if k != "events"})
                    if txn_id in bridge.seen_txns:
                        assert bridge.seen_txns[txn_id] == same
                    else:
                        bridge.seen_txns[txn_id] = same
                        for event in body["events"]:
                            bridge.events.put(event)
                        for event in body.get("ephemeral", []):
                            bridge.ephemeral.put(event)
                        assert body.get("ephemeral") == body.get("de.sorunome.msc2409.ephemeral")
                        for message in body.get("de.sorunome.msc2409.to_device", []):
                            bridge.to_device.put(message)
                        news = {k.removeprefix("org.matrix.msc3202."): v for k, v in body.items()
                                if k.startswith("org.matrix.msc3202.")}
                        if news:
                            bridge.device_news.put(news)
                    if bridge.lose > 0:
                        bridge.lose -= 1
                        return self.answer(500, {})
                self.answer(200, {})

            def do_GET(self):
                if self.path.startswith("/_matrix/app/v1/thirdparty/"):
                    return self.thirdparty()
                if self.path.startswith("/_matrix/app/v1/users/"):
                    return self.user_query(unquote(self.path[len("/_matrix/app/v1/users/"):]))
                # Alias queries: `#bridge_lobby` is made on demand.
                prefix = "/_matrix/app/v1/rooms/"
                if not self.path.startswith(prefix) or not self.authorized():
                    return self.answer(404, {"errcode": "M_NOT_FOUND"})
                alias = unquote(self.path[len(prefix):])
                bridge.alias_queries.append(alias)
                if alias != "#bridge_lobby:localhost" or bridge.server is None:
                    return self.answer(404, {"errcode": "M_NOT_FOUND"})
                r = as_request(bridge.server, "POST", "/_matrix/client/v3/createRoom",
                               json={"room_alias_name": "bridge_lobby", "preset": "public_chat"})
                self.answer(200 if r.status_code == 200 else 500, {})

            def user_query(self, user_id: str):
                # Puppets called `@bridge_made_*` are made when asked for.
                if not self.authorized():
                    return
                bridge.user_queries.append(user_id)
                if not user_id.startswith("@bridge_made_") or bridge.server is None:
                    return self.answer(404, {"errcode": "M_NOT_FOUND"})
                r = register_puppet(bridge.server, user_id[1:].split(":")[0])
                self.answer(200 if r.status_code == 200 else 500, {})

            def thirdparty(self):
                if not self.authorized():
                    return
                path, _, query = self.path[len("/_matrix/app/v1/thirdparty/"):].partition("?")
                bridge.thirdparty_queries.append((path, query))
                if path == "protocol/irc":
                    return self.answer(200, IRC_PROTOCOL)
                if path == "location/irc":
                    return self.answer(200, [{"alias": "#bridge_lobby:localhost", "protocol": "irc",
                                              "fields": dict(parse_qsl(query))}])
                if path == "user":
                    return self.answer(200, [{"userid": dict(parse_qsl(query))["userid"], "protocol": "irc",
                                              "fields": {"nick": "alice"}}])
                self.answer(404, {"errcode": "M_NOT_FOUND"})

            def do_POST(self):
                body = self.body()
                if self.path != "/_matrix/app/v1/ping":
                    return self.answer(404, {"errcode": "M_UNRECOGNIZED"})
                if not self.authorized():
                    return
                bridge.pings.put(body)
                self.answer(200, {})

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", port or free_port()), Handler)
        self.port = self.http.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def wait_for(self, event_id: str, timeout: float = 20) -> dict:
        return next_from(self.events, lambda e: e["event_id"] == event_id, timeout)

    def drain(self, timeout: float = 20, until: str | None = None) -> list[dict]:
        """Every event received until `until` arrives."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            got.append(event)
            if event["event_id"] == until:
                return got

    def close(self):
        self.http.shutdown()
        self.http.server_close()


def registration(url: str | None, as_id: str = "bridge", as_token: str = AS_TOKEN,
                 hs_token: str = HS_TOKEN, prefix: str = "bridge_", sender: str = "bridgebot",
                 ephemeral: bool = False, msc3202: bool = False, shared_prefix: str = "nobody_shared_") -> str:
    return f"""
receive_ephemeral: {json.dumps(ephemeral)}
org.matrix.msc3202: {json.dumps(msc3202)}
id: {as_id}
url: {json.dumps(url)}
as_token: {as_token}
hs_token: {hs_token}
sender_localpart: {sender}
rate_limited: false
protocols: [irc]
namespaces:
  users:
    - exclusive: true
      regex: "@{prefix}.*:localhost"
    - exclusive: false
      regex: "@{shared_prefix}.*:localhost"
  aliases:
    - exclusive: true
      regex: "#{prefix}.*:localhost"
  rooms: []
"""


@pytest.fixture
def bridge():
    b = Bridge()
    yield b
    b.close()


def server_with(make_server, tmp_path, bridge_url: str | None, **kwargs):
    path = tmp_path / f"registration-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(registration(bridge_url, **kwargs))
    return make_server({"CONDUIT_APPSERVICE_REGISTRATION_FILES": json.dumps([str(path)])})


def as_request(server, method: str, path: str, user_id: str | None = None, token: str = AS_TOKEN, **kwargs):
    params = kwargs.pop("params", {})
    if user_id:
        params["user_id"] = user_id
    return server.request(method, path, token, params=params, **kwargs)


def register_puppet(server, localpart: str, token: str = AS_TOKEN, **extra):
    return as_request(server, "POST", "/_matrix/client/v3/register", token=token,
                      json={"type": "m.login.application_service", "username": localpart, **extra})


def send(server, room_id: str, body: str, token: str, user_id: str | None = None) -> str:
    r = as_request(server, "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}",
                   user_id, token=token, json={"msgtype": "m.text", "body": body})
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def test_puppets_are_registered_and_act_inside_the_namespace_only(make_server, tmp_path, bridge):
    server = server_with(make_server, tmp_path, bridge.url)
    # The appservice's own user exists from the start.
    r = as_request(server, "GET", "/_matrix/client/v3/account/whoami")
    assert r.status_code == 200 and r.json()["user_id"] == "@bridgebot:localhost", r.text
    # The login flows say appservices may log in.
    flows = [f["type"] for f in server.request("GET", "/_matrix/client/v3/login").json()["flows"]]
    assert "m.login.application_service" in flows

    # Puppets: registered without a password, with or without a session.
    puppet = "@bridge_alice:localhost"
    r = register_puppet(server, "bridge_alice")
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == puppet and r.json()["access_token"]
    quiet = register_puppet(server, "bridge_quiet", inhibit_login=True).json()
    assert quiet["user_id"] == "@bridge_quiet:localhost" and "access_token" not in quiet
    assert register_puppet(server, "bridge_alice").json()["errcode"] == "M_USER_IN_USE"
    r = register_puppet(server, "mallory")
    assert (r.status_code, r.json()["errcode"]) == (400, "M_EXCLUSIVE")
    r = register_puppet(server, "bridge_x", token="not-a-token")
    assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    # An appservice's token does not register ordinary accounts.
    r = as_request(server, "POST", "/_matrix/client/v3/register",
                   json={"username": "bridge_pw", "password": "secret secret", "auth": {"type": "m.login.dummy"}})
    assert r.json()["errcode"] == "M_APPSERVICE_LOGIN_UNSUPPORTED", r.text

    # Acting as a puppet.
    r = as_request(server, "GET", "/_matrix/client/v3/account/whoami", puppet)
    assert r.json()["user_id"] == puppet, r.text
    human = server.register(unique("human"))
    for outside in [human["user_id"], "@bridge_nobody:localhost", "@bridge_alice:elsewhere.example"]:
        r = as_request(server, "GET", "/_matrix/client/v3/account/whoami", outside)
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN"), (outside, r.text)
    r = as_request(server, "GET", "/_matrix/client/v3/account/whoami", token="wrong-as-token")
    assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")

    # A puppet logs in for a device of its own (end-to-end encryption).
    r = as_request(server, "POST", "/_matrix/client/v3/login",
                   json={"type": "m.login.application_service",
                         "identifier": {"type": "m.id.user", "user": "bridge_alice"}})
    assert r.status_code == 200 and r.json()["user_id"] == puppet, r.text
    device_id = r.json()["device_id"]
    r = as_request(server, "GET", "/_matrix/client/v3/account/whoami", puppet, params={"device_id": device_id})
    assert r.json()["device_id"] == device_id, r.text
    r = as_request(server, "GET", "/_matrix/client/v3/account/whoami", puppet, params={"device_id": "NOPE"})
    assert r.status_code == 403, r.text
    r = server.request("POST", "/_matrix/client/v3/login",
                       json={"type": "m.login.application_service",
                             "identifier": {"type": "m.id.user", "user": "bridge_alice"}})
    assert r.status_code == 401, r.text
    r = as_request(server, "POST", "/_matrix/client/v3/login",
                   json={"type": "m.login.application_service",
                         "identifier": {"type": "m.id.user", "user": human["user_id"]}})
    assert r.status_code == 403, r.text

    # Others are refused the exclusive namespaces.
    r = server.request("POST", "/_matrix/client/v3/register",
                       json={"username": "bridge_bob", "password": "correct horse battery",
                             "auth": {"type": "m.login.dummy"}})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_EXCLUSIVE"), r.text
    r = server.request("GET", "/_matrix/client/v3/register/available", params={"username": "bridge_bob"})
    assert r.json()["errcode"] == "M_EXCLUSIVE"
    r = server.request("POST", "/_matrix/client/v3/createRoom", human["access_token"],
                       json={"room_alias_name": "bridge_chat"})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_EXCLUSIVE"), r.text
    # The puppet may take the alias.
    r = as_request(server, "POST", "/_matrix/client/v3/createRoom", puppet, json={"room_alias_name": "bridge_chat"})
    assert r.status_code == 200, r.text
    r = server.request("PUT", "/_matrix/client/v3/directory/room/%23bridge_other:localhost",
                       human["access_token"], json={"room_id": r.json()["room_id"]})
    assert r.json()["errcode"] in ("M_EXCLUSIVE", "M_FORBIDDEN"), r.text


def test_transactions_carry_every_event_in_order_once(make_server, tmp_path, bridge):
    server = server_with(make_server, tmp_path, bridge.url)
    human = server.register(unique("human"))
    puppet = "@bridge_carol:localhost"
    assert register_puppet(server, "bridge_carol").status_code == 200

    # A room of humans only is none of the appservice's business...
    r = server.request("POST", "/_matrix/client/v3/createRoom", human["access_token"], json={})
    private = r.json()["room_id"]
    secret = send(server, private, "not for bridges", human["access_token"])
    # ... until a puppet is invited: the invite, and all after, go to it.
    r = server.request("POST", "/_matrix/client/v3/createRoom", human["access_token"],
                       json={"invite": [puppet], "preset": "private_chat"})
    room_id = r.json()["room_id"]
    r = as_request(server, "POST", f"/_matrix/client/v3/join/{room_id}", puppet, json={})
    assert r.status_code == 200, r.text
    sent = [send(server, room_id, f"message {i}", human["access_token"]) for i in range(30)]
    from_puppet = send(server, room_id, "from the bridge", AS_TOKEN, puppet)
    got = bridge.drain(until=from_puppet)
    ids = [e["event_id"] for e in got]
    assert secret not in ids
    assert ids[-31:] == sent + [from_puppet]
    kinds = [(e["type"], e.get("state_key")) for e in got]
    assert ("m.room.member", puppet) in kinds
    invite = next(e for e in got if e["type"] == "m.room.member" and e["content"]["membership"] == "invite")
    assert invite["state_key"] == puppet and invite["room_id"] == room_id
    assert got[-1]["sender"] == puppet and got[-1]["content"]["body"] == "from the bridge"
    # Each event came once, and the server never used a wrong hs_token.
    assert len(ids) == len(set(ids))
    assert bridge.wrong_tokens == 0
    assert all(re.fullmatch(r"[A-Za-z0-9._~-]+", txn) for txn, _ in bridge.transactions)


def test_a_failing_appservice_gets_every_event_once_after_a_restart(make_server, tmp_path, bridge):
    server = server_with(make_server, tmp_path, bridge.url)
    human = server.register(unique("human"))
    puppet = "@bridge_dave:localhost"
    register_puppet(server, "bridge_dave")
    r = server.request("POST", "/_matrix/client/v3/createRoom", human["access_token"], json={"invite": [puppet]})
    room_id = r.json()["room_id"]
    as_request(server, "POST", f"/_matrix/client/v3/join/{room_id}", puppet, json={})
    first = send(server, room_id, "warm up", human["access_token"])
    bridge.drain(until=first)

    # The appservice takes a transaction but its answer is lost: the retry
    # is the same transaction (the bridge asserts it), counted once.
    bridge.lose = 1
    lost = send(server, room_id, "answer lost", human["access_token"])
    bridge.wait_for(lost)
    deadline = time.monotonic() + 20
    while sum(1 for _, ids in bridge.transactions if lost in ids) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    retried = [txn for txn, ids in bridge.transactions if lost in ids]
    assert len(retried) == 2 and retried[0] == retried[1]

    # Down for a while, and the server killed meanwhile: nothing is lost.
    bridge.fail = 10**6
    during = [send(server, room_id, f"while down {i}", human["access_token"]) for i in range(5)]
    time.sleep(1)
    server.kill()
    server.start()
    after = send(server, room_id, "after the restart", human["access_token"])
    bridge.fail = 0
    got = [e["event_id"] for e in bridge.drain(timeout=40, until=after)]
    assert got == during + [after]
    assert "transaction failed" in server.log()


def next_ephemeral(bridge, kind: str, timeout: float = 15) -> dict:
    return next_from(bridge.ephemeral, lambda e: e["type"] == kind, timeout)


def test_typing_and_receipts_reach_an_appservice_that_asks(make_server, tmp_path, bridge):
    server = server_with(make_server, tmp_path, bridge.url, ephemeral=True)
    human = server.register(unique("human"))
    token = human["access_token"]
    puppet = "@bridge_ivy:localhost"
    register_puppet(server, "bridge_ivy")
    room_id = server.request("POST", "/_matrix/client/v3/createRoom", token, json={"invite": [puppet]}).json()["room_id"]
    as_request(server, "POST", f"/_matrix/client/v3/join/{room_id}", puppet, json={})
    # Typing, and its end.
    r = server.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/typing/{human['user_id']}", token,
                       json={"typing": True, "timeout": 30000})
    assert r.status_code == 200, r.text
    typing = next_ephemeral(bridge, "m.typing")
    assert typing == {"type": "m.typing", "room_id": room_id, "content": {"user_ids": [human["user_id"]]}}
    server.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/typing/{human['user_id']}", token, json={"typing": False})
    assert next_ephemeral(bridge, "m.typing")["content"]["user_ids"] == []
    # A read receipt; a private one is nobody's business.
    event_id = send(server, room_id, "from the bridge", AS_TOKEN, puppet)
    bridge.wait_for(event_id)
    r = server.request("POST", f"/_matrix/client/v3/rooms/{room_id}/receipt/m.read.private/{event_id}", token, json={})
    assert r.status_code == 200, r.text
    r = server.request("POST", f"/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{event_id}", token, json={})
    assert r.status_code == 200, r.text
    receipt = next_ephemeral(bridge, "m.receipt")
    assert receipt["room_id"] == room_id
    assert list(receipt["content"]) == [event_id]
    assert list(receipt["content"][event_id]) == ["m.read"]
    assert human["user_id"] in receipt["content"][event_id]["m.read"]
    # Typing in a room without the appservice's users is not sent.
    other = server.request("POST", "/_matrix/client/v3/createRoom", token, json={}).json()["room_id"]
    server.request("PUT", f"/_matrix/client/v3/rooms/{other}/typing/{human['user_id']}", token,
                   json={"typing": True, "timeout": 30000})
    time.sleep(1)
    while not bridge.ephemeral.empty():
        assert bridge.ephemeral.get()["room_id"] != other


def test_no_ephemeral_events_unless_asked(make_server, tmp_path, bridge):
    server = server_with(make_server, tmp_path, bridge.url)
    human = server.register(unique("human"))
    token = human["access_token"]
    register_puppet(server, "bridge_jay")
    room_id = server.request("POST", "/_matrix/client/v3/createRoom", token,
                             json={"invite": ["@bridge_jay:localhost"]}).json()["room_id"]
    as_request(server, "POST", f"/_matrix/client/v3/join/{room_id}", "@bridge_jay:localhost", json={})
    server.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/typing/{human['user_id']}", token,
                   json={"typing": True, "timeout": 30000})
    last = send(server, room_id, "after typing", token)
    bridge.wait_for(last)
    assert bridge.ephemeral.empty()


def test_ping_both_ways(make_server, tmp_path, bridge):
    server = server_with(make_server, tmp_path, bridge.url)
    r = as_request(server, "POST", "/_matrix/client/v1/appservice/bridge/ping", json={"transaction_id": "ping-1"})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["duration_ms"], int)
    assert bridge.pings.get(timeout=5) == {"transaction_id": "ping-1"}
    r = as_request(server, "POST", "/_matrix/client/v1/appservice/other/ping", json={})
    assert r.status_code == 403, r.text
    human = server.register(unique("human"))
    r = server.request("POST", "/_matrix/client/v1/appservice/bridge/ping", human["access_token"], json={})
    assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN"), r.text
    bridge.close()
    r = as_request(server, "POST", "/_matrix/client/v1/appservice/bridge/ping", json={})
    assert (r.status_code, r.json()["errcode"]) == (502, "M_CONNECTION_FAILED"), r.text


def test_unknown_aliases_of_the_namespace_are_asked_of_the_appservice(make_server, tmp_path, bridge):
    server = server_with(make_server, tmp_path, bridge.url)
    bridge.server = server
    human = server.register(unique("human"))
    r = server.request("GET", "/_matrix/client/v3/directory/room/%23bridge_lobby:localhost", human["access_token"])
    assert r.status_code == 200, r.text
    room_id = r.json()["room_id"]
    r = server.request("POST", "/_matrix/client/v3/join/%23bridge_lobby:localhost", human["access_token"], json={})
    assert r.status_code == 200 and r.json()["room_id"] == room_id, r.text
    r = server.request("GET", "/_matrix/client/v3/directory/room/%23bridge_none:localhost", human["access_token"])
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    # Outside the namespace the appservice is not asked.
    server.request("GET", "/_matrix/client/v3/directory/room/%23other:localhost", human["access_token"])
    assert bridge.alias_queries == ["#bridge_lobby:localhost", "#bridge_none:localhost"]


def test_unknown_users_of_the_namespace_are_asked_of_the_appservice(make_server, tmp_path, bridge):
    server = server_with(make_server, tmp_path, bridge.url)
    bridge.server = server
    human = server.register(unique("human"))
    token = human["access_token"]
    r = server.request("GET", "/_matrix/client/v3/profile/@bridge_made_frank:localhost", token)
    assert r.status_code == 200 and r.json()["displayname"] == "bridge_made_frank", r.text
    r = server.request("GET", "/_matrix/client/v3/profile/@bridge_ghost:localhost", token)
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    # Invited before it exists: the bridge makes it, and it can join.
    room_id = server.request("POST", "/_matrix/client/v3/createRoom", token, json={}).json()["room_id"]
    r = server.request("POST", f"/_matrix/client/v3/rooms/{room_id}/invite", token,
                       json={"user_id": "@bridge_made_gina:localhost"})
    assert r.status_code == 200, r.text
    r = as_request(server, "POST", f"/_matrix/client/v3/join/{room_id}", "@bridge_made_gina:localhost", json={})
    assert r.status_code == 200, r.text
    # Existing users and users outside the namespace are not asked about.
    server.request("GET", f"/_matrix/client/v3/profile/{human['user_id']}", token)
    server.request("GET", "/_matrix/client/v3/profile/@nobody:localhost", token)
    assert bridge.user_queries == ["@bridge_made_frank:localhost", "@bridge_ghost:localhost",
                                   "@bridge_made_gina:localhost"]


def test_thirdparty_lookups_pass_through_to_the_bridge(make_server, tmp_path, bridge):
    server = server_with(make_server, tmp_path, bridge.url)
    token = server.register(unique("human"))["access_token"]
    r = server.request("GET", "/_matrix/client/v3/thirdparty/protocols", token)
    assert r.status_code == 200 and r.json() == {"irc": IRC_PROTOCOL}, r.text
    assert server.request("GET", "/_matrix/client/v3/thirdparty/protocol/irc", token).json() == IRC_PROTOCOL
    r = server.request("GET", "/_matrix/client/v3/thirdparty/protocol/xmpp", token)
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    r = server.request("GET", "/_matrix/client/v3/thirdparty/location/irc", token,
                       params={"network": "irc.example.org", "channel": "#matrix"})
    assert r.json() == [{"alias": "#bridge_lobby:localhost", "protocol": "irc",
                         "fields": {"network": "irc.example.org", "channel": "#matrix"}}], r.text
    r = server.request("GET", "/_matrix/client/v3/thirdparty/user", token, params={"userid": "@bridge_alice:localhost"})
    assert r.json()[0]["userid"] == "@bridge_alice:localhost", r.text
    r = server.request("GET", "/_matrix/client/v3/thirdparty/location", token)
    assert (r.status_code, r.json()["errcode"]) == (400, "M_MISSING_PARAM")
    assert server.request("GET", "/_matrix/client/v3/thirdparty/protocols").status_code == 401
    assert bridge.wrong_tokens == 0


def test_a_bad_registration_file_stops_the_start_saying_why(make_server, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(registration("http://127.0.0.1:9", hs_token=AS_TOKEN))
    server = make_server({"CONDUIT_APPSERVICE_REGISTRATION_FILES": json.dumps([str(path)])}, start=False)
    server.start(wait=False)
    assert server.proc.wait(timeout=30) != 0
    assert "bad.yaml" in server.log() and "must differ" in server.log()


def admin(server, *words):
    return subprocess.run([str(binary()), "admin", *words], env=server.env, capture_output=True,
                          text=True, timeout=60, cwd=server.data_dir)


def test_admin_commands_register_list_and_unregister(make_server, tmp_path, bridge):
    server = make_server()
    token = "as-" + uuid.uuid4().hex
    path = tmp_path / "bot.yaml"
    path.write_text(registration(bridge.url, as_id="bot", as_token=token, hs_token=HS_TOKEN,
                                 prefix="bot_", sender="thebot"))
    result = admin(server, "appservice", "register", str(path))
    assert result.returncode == 0 and "@thebot:localhost" in result.stdout, result.stderr
    # Working at once, without a restart.
    r = as_request(server, "GET", "/_matrix/client/v3/account/whoami", token=token)
    assert r.json()["user_id"] == "@thebot:localhost", r.text
    assert register_puppet(server, "bot_one", token=token).status_code == 200
    listed = admin(server, "appservice", "list").stdout
    assert "bot: @thebot:localhost" in listed and bridge.url in listed
    again = admin(server, "appservice", "register", str(path))
    assert again.returncode != 0 and "already" in again.stderr

    # Kept across a restart.
    server.stop()
    server.start()
    assert as_request(server, "GET", "/_matrix/client/v3/account/whoami", token=token).status_code == 200

    result = admin(server, "appservice", "unregister", "bot")
    assert result.returncode == 0, result.stderr
    r = as_request(server, "GET", "/_matrix/client/v3/account/whoami", token=token)
    assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert "No appservice" in admin(server, "appservice", "list").stdout


def mautrix_appservice(server, port: int, **options):
    """mautrix-python's AppService for the suite's registration."""
    from mautrix.appservice import AppService

    return AppService(server=server.url, domain="localhost", as_token=AS_TOKEN, hs_token=HS_TOKEN,
                      bot_localpart="bridgebot", id="bridge", **options)


def run_showing_log(server, run) -> None:
    """Runs the coroutine function `run`; a timeout shows the server's log."""
    import asyncio

    try:
        asyncio.run(run())
    except TimeoutError:
        raise AssertionError(server.log()[-3000:])


def test_a_mautrix_python_bridge_works_against_the_server(make_server, tmp_path):
    """mautrix-python's appservice library (what the mautrix bridges are
    built on) as the appservice: it pings itself through the server,
    registers a puppet, creates a room, sends, and receives a human's
    message by transaction."""
    import asyncio

    from mautrix.types import EventType, UserID

    port = free_port()
    server = server_with(make_server, tmp_path, f"http://127.0.0.1:{port}")
    human = server.register(unique("human"))

    async def run():
        received: asyncio.Queue = asyncio.Queue()
        appservice = mautrix_appservice(server, port)

        async def on_event(event):
            await received.put(event)

        appservice.matrix_event_handler(on_event)
        await appservice.start(host="127.0.0.1", port=port)
        try:
            assert await appservice.ping_self() >= 0
            intent = appservice.intent.user(UserID("@bridge_erin:localhost"))
            await intent.ensure_registered()
            room_id = await intent.create_room(invitees=[human["user_id"]])
            sent = await intent.send_text(room_id, "hello from mautrix")
            r = await asyncio.to_thread(server.request, "POST", f"/_matrix/client/v3/join/{room_id}",
                                        human["access_token"], json={})
            assert r.status_code == 200, r.text
            reply = await asyncio.to_thread(send, server, room_id, "hello bridge", human["access_token"])
            seen = []
            while reply not in seen:
                event = await asyncio.wait_for(received.get(), timeout=20)
                seen.append(event.event_id)
                if event.event_id == reply:
                    assert event.type == EventType.ROOM_MESSAGE and event.content.body == "hello bridge"
            assert sent in seen
        finally:
            await appservice.stop()

    run_showing_log(server, run)


def as_login(server, localpart: str, device_id: str) -> dict:
    """A device of a puppet, as a bridge makes one for its encryption."""
    r = as_request(server, "POST", "/_matrix/client/v3/login",
                   json={"type": "m.login.application_service", "device_id": device_id,
                         "identifier": {"type": "m.id.user", "user": localpart}})
    assert r.status_code == 200, r.text
    return r.json()


def send_to_device(server, token: str, messages: dict, kind: str = "m.test.ping") -> None:
    r = server.request("PUT", f"/_matrix/client/v3/sendToDevice/{kind}/{uuid.uuid4().hex}", token,
                       json={"messages": messages})
    assert r.status_code == 200, r.text


def to_device_of_sync(server, token: str) -> list[dict]:
    r = server.request("GET", "/_matrix/client/v3/sync", token, params={"timeout": "0"})
    assert r.status_code == 200, r.text
    return r.json().get("to_device", {}).get("events", [])


def test_to_device_messages_for_its_users_reach_the_appservice(make_server, tmp_path, bridge):
    """MSC4203: to-device messages for its users' devices come in the
    appservice's transactions (`to_user_id`, `to_device_id`), taken from
    the inbox of users it claims exclusively, copied for users of a shared
    namespace; they wait on disk while it is down."""
    server = server_with(make_server, tmp_path, bridge.url, shared_prefix="shared_")
    human = server.register(unique("human"))
    token = human["access_token"]
    puppet = "@bridge_kim:localhost"
    register_puppet(server, "bridge_kim", inhibit_login=True)
    phone = as_login(server, "bridge_kim", "KIMPHONE")
    as_login(server, "bridge_kim", "KIMLAPTOP")

    send_to_device(server, token, {puppet: {"KIMPHONE": {"n": 1}}})
    message = next_from(bridge.to_device, lambda m: True, 15)
    assert message == {"to_user_id": puppet, "to_device_id": "KIMPHONE", "sender": human["user_id"],
                       "type": "m.test.ping", "content": {"n": 1}}
    # `*`: one message per device of the puppet.
    send_to_device(server, token, {puppet: {"*": {"n": 2}}})
    devices = {next_from(bridge.to_device, lambda m: m["content"] == {"n": 2}, 15)["to_device_id"] for _ in range(2)}
    assert devices == {"KIMPHONE", "KIMLAPTOP"}
    # The puppet is the appservice's alone: its inbox holds none of them.
    assert to_device_of_sync(server, phone["access_token"]) == []

    # A user of a shared namespace gets the message and the appservice a copy.
    shared = server.register("shared_" + unique("lee"))
    send_to_device(server, token, {shared["user_id"]: {shared["device_id"]: {"n": 3}}})
    copy = next_from(bridge.to_device, lambda m: True, 15)
    assert (copy["to_user_id"], copy["to_device_id"], copy["content"]) == (shared["user_id"], shared["device_id"], {"n": 3})
    assert [e["content"] for e in to_device_of_sync(server, shared["access_token"])] == [{"n": 3}]
    # Users of nobody's namespace are not the appservice's business.
    other = server.register(unique("other"))
    send_to_device(server, token, {other["user_id"]: {other["device_id"]: {"n": 4}}})
    send_to_device(server, token, {puppet: {"KIMPHONE": {"n": 5}}})
    assert next_from(bridge.to_device, lambda m: True, 15)["content"] == {"n": 5}
    assert [e["content"] for e in to_device_of_sync(server, other["access_token"])] == [{"n": 4}]

    # Down, and the server killed meanwhile: the message waits on disk
    # and arrives once.
    bridge.fail = 10**6
    send_to_device(server, token, {puppet: {"KIMPHONE": {"n": 6}}})
    time.sleep(1)
    server.kill()
    server.start()
    bridge.fail = 0
    assert next_from(bridge.to_device, lambda m: True, 30)["content"] == {"n": 6}
    send_to_device(server, token, {puppet: {"KIMPHONE": {"n": 7}}})
    assert next_from(bridge.to_device, lambda m: True, 15)["content"] == {"n": 7}


def next_news(bridge, field: str, wanted=lambda value: True, timeout: float = 15) -> dict:
    return next_from(bridge.device_news, lambda n: field in n and wanted(n[field]), timeout)


def test_key_counts_and_device_lists_reach_an_appservice_that_asks(make_server, tmp_path, bridge):
    """MSC3202 (`org.matrix.msc3202: true`): the one-time-key counts and
    unused fallback key types of its puppets' devices, after an upload, a
    claim and a restart; whose device lists changed, among the users it
    shares a room with."""
    from e2ee_raw import Device, new_user

    server = server_with(make_server, tmp_path, bridge.url, msc3202=True)
    puppet = "@bridge_max:localhost"
    register_puppet(server, "bridge_max")
    as_login(server, "bridge_max", "MAXDEV")
    # The bridge uploads the keys of the puppet's device, acting as it.
    keys = Device(server.url, puppet, AS_TOKEN, "MAXDEV")
    upload = {
        "device_keys": keys.device_keys(),
        "one_time_keys": {f"signed_curve25519:K{i}": keys.signed_key(f"K{i}") for i in range(2)},
        "fallback_keys": {"signed_curve25519:F": keys.signed_key("F", fallback=True)},
    }
    r = as_request(server, "POST", "/_matrix/client/v3/keys/upload", puppet,
                   params={"device_id": "MAXDEV"}, json=upload)
    assert r.status_code == 200, r.text
    news = next_news(bridge, "device_one_time_keys_count")
    assert news["device_one_time_keys_count"][puppet]["MAXDEV"] == {"signed_curve25519": 2}
    assert news["device_unused_fallback_key_types"][puppet]["MAXDEV"] == ["signed_curve25519"]

    # Someone claims a key: the count goes down.
    human = new_user(server)
    human.call("POST", "/keys/claim", json={"one_time_keys": {puppet: {"MAXDEV": "signed_curve25519"}}})
    news = next_news(bridge, "device_one_time_keys_count")
    assert news["device_one_time_keys_count"][puppet]["MAXDEV"] == {"signed_curve25519": 1}

    # Device lists: a room-mate's keys are news, a stranger's are not.
    room_id = human.call("POST", "/createRoom", json={"invite": [puppet]}).json()["room_id"]
    as_request(server, "POST", f"/_matrix/client/v3/join/{room_id}", puppet, json={})
    stranger = new_user(server)
    stranger.call("POST", "/keys/upload", json={"device_keys": stranger.device_keys()})
    human.call("POST", "/keys/upload", json={"device_keys": human.device_keys()})
    told = []
    while human.user_id not in told:
        told += next_news(bridge, "device_lists")["device_lists"]["changed"]
    assert stranger.user_id not in told

    # After a restart the counts are told again: which changed meanwhile
    # was in memory only.
    server.stop()
    server.start()
    news = next_news(bridge, "device_one_time_keys_count", lambda counts: puppet in counts, timeout=30)
    assert news["device_one_time_keys_count"][puppet]["MAXDEV"] == {"signed_curve25519": 1}


def test_no_device_news_unless_asked(make_server, tmp_path, bridge):
    from e2ee_raw import Device

    server = server_with(make_server, tmp_path, bridge.url)
    puppet = "@bridge_ned:localhost"
    register_puppet(server, "bridge_ned")
    as_login(server, "bridge_ned", "NEDDEV")
    keys = Device(server.url, puppet, AS_TOKEN, "NEDDEV")
    r = as_request(server, "POST", "/_matrix/client/v3/keys/upload", puppet, params={"device_id": "NEDDEV"},
                   json={"device_keys": keys.device_keys(), "one_time_keys": {"signed_curve25519:A": keys.signed_key("A")}})
    assert r.status_code == 200, r.text
    human = server.register(unique("human"))
    room_id = server.request("POST", "/_matrix/client/v3/createRoom", human["access_token"],
                             json={"invite": [puppet]}).json()["room_id"]
    as_request(server, "POST", f"/_matrix/client/v3/join/{room_id}", puppet, json={})
    bridge.wait_for(send(server, room_id, "marker", human["access_token"]))
    time.sleep(1)
    assert bridge.device_news.empty()


def test_presence_reaches_an_appservice_that_asks(make_server, tmp_path, bridge):
    server = server_with(make_server, tmp_path, bridge.url, ephemeral=True)
    human = server.register(unique("human"))
    stranger = server.register(unique("stranger"))
    puppet = "@bridge_oli:localhost"
    register_puppet(server, "bridge_oli")
    room_id = server.request("POST", "/_matrix/client/v3/createRoom", human["access_token"],
                             json={"invite": [puppet]}).json()["room_id"]
    as_request(server, "POST", f"/_matrix/client/v3/join/{room_id}", puppet, json={})

    def set_presence(user: dict, presence: str, status: str | None = None):
        body = {"presence": presence, **({"status_msg": status} if status else {})}
        r = server.request("PUT", f"/_matrix/client/v3/presence/{user['user_id']}/status", user["access_token"], json=body)
        assert r.status_code == 200, r.text

    set_presence(stranger, "online", "not in your rooms")
    set_presence(human, "online", "bridging")
    seen = []
    while True:
        event = next_ephemeral(bridge, "m.presence")
        seen.append(event["sender"])
        if event["sender"] == human["user_id"]:
            break
    assert event["content"]["presence"] == "online"
    assert event["content"]["status_msg"] == "bridging"
    assert stranger["user_id"] not in seen
    # Its own users' presence too, rooms or not.
    r = as_request(server, "PUT", f"/_matrix/client/v3/presence/{puppet}/status", puppet, json={"presence": "unavailable"})
    assert r.status_code == 200, r.text
    event = next_from(bridge.ephemeral, lambda e: e["type"] == "m.presence" and e["sender"] == puppet, 15)
    assert event["content"]["presence"] == "unavailable"


def test_an_appservice_needs_no_interactive_auth_and_cannot_act_as_a_deactivated_puppet(make_server, tmp_path):
    """Its as_token is its proof: a puppet's devices go and the puppet is
    deactivated without user-interactive auth (puppets have no password);
    a deactivated puppet cannot be acted as."""
    server = server_with(make_server, tmp_path, None)
    puppet = "@bridge_pat:localhost"
    register_puppet(server, "bridge_pat", inhibit_login=True)
    for device in ("PATA", "PATB", "PATC"):
        as_login(server, "bridge_pat", device)
    r = as_request(server, "DELETE", "/_matrix/client/v3/devices/PATA", puppet, json={})
    assert r.status_code == 200, r.text
    r = as_request(server, "POST", "/_matrix/client/v3/delete_devices", puppet, json={"devices": ["PATB"]})
    assert r.status_code == 200, r.text
    r = as_request(server, "GET", "/_matrix/client/v3/devices", puppet)
    assert [d["device_id"] for d in r.json()["devices"]] == ["PATC"]
    # A human still has to prove it is them.
    human = server.register(unique("human"))
    r = server.request("DELETE", f"/_matrix/client/v3/devices/{human['device_id']}", human["access_token"], json={})
    assert r.status_code == 401 and "flows" in r.json()
    r = as_request(server, "POST", "/_matrix/client/v3/account/deactivate", puppet, json={})
    assert r.status_code == 200, r.text
    r = as_request(server, "GET", "/_matrix/client/v3/account/whoami", puppet)
    assert (r.status_code, r.json()["errcode"]) == (403, "M_USER_DEACTIVATED")


def test_mautrix_python_takes_to_device_messages_and_key_counts(make_server, tmp_path):
    """mautrix-python's appservice library in encryption mode (what its
    bridges' end-to-bridge encryption is built on) reads the to-device
    messages and one-time-key counts of its transactions."""
    import asyncio

    from e2ee_raw import Device

    port = free_port()
    server = server_with(make_server, tmp_path, f"http://127.0.0.1:{port}", msc3202=True)
    human = server.register(unique("human"))
    puppet = "@bridge_quinn:localhost"
    register_puppet(server, "bridge_quinn", inhibit_login=True)
    as_login(server, "bridge_quinn", "QUINNDEV")

    async def run():
        to_device: asyncio.Queue = asyncio.Queue()
        counts: asyncio.Queue = asyncio.Queue()
        appservice = mautrix_appservice(server, port, encryption_events=True)

        async def on_to_device(event):
            await to_device.put(event)

        async def on_counts(otk_counts):
            await counts.put(otk_counts)

        appservice.to_device_handler = on_to_device
        appservice.otk_handler = on_counts
        await appservice.start(host="127.0.0.1", port=port)
        try:
            await asyncio.to_thread(send_to_device, server, human["access_token"],
                                    {puppet: {"QUINNDEV": {"secret": "s3"}}}, "org.example.ping")
            event = await asyncio.wait_for(to_device.get(), timeout=20)
            assert (event.to_user_id, event.to_device_id, event.sender) == (puppet, "QUINNDEV", human["user_id"])
            assert event.content.serialize()["secret"] == "s3"
            keys = Device(server.url, puppet, AS_TOKEN, "QUINNDEV")
            upload = {"one_time_keys": {f"signed_curve25519:Q{i}": keys.signed_key(f"Q{i}") for i in range(3)}}
            r = await asyncio.to_thread(as_request, server, "POST", "/_matrix/client/v3/keys/upload", puppet,
                                        params={"device_id": "QUINNDEV"}, json=upload)
            assert r.status_code == 200, r.text
            while True:
                otk_counts = await asyncio.wait_for(counts.get(), timeout=20)
                count = otk_counts.get(puppet, {}).get("QUINNDEV")
                if count is not None and count.signed_curve25519 == 3:
                    break
        finally:
            await appservice.stop()

    run_showing_log(server, run)
