"""Hostile federation input from a peer written in the suite: every bad
request is answered as the spec says, nothing is stored that should not
be, and nothing answers 500."""

import copy
import time

import pytest
import signedjson.key

from conftest import unique
from e2ee_raw import Device
from fake_peer import FakePeer
from federation import federation_env, register


@pytest.fixture
def setting(make_server, tmp_path):
    """Our server with a public room, a fake peer whose user joined it."""
    ours = make_server(federation_env(tmp_path))
    peer = FakePeer(tmp_path / "peer")
    alice = register(ours.url, unique("alice"))
    room = alice.create_room(preset="public_chat")
    mallory = f"@mallory:{peer.server_name}"
    join_id, answer = peer.join(ours, room, mallory)
    state = {(e["type"], e.get("state_key")): e for e in alice.call(
        "GET", f"/_matrix/client/v3/rooms/{room}/state").json()}
    yield ours, peer, alice, room, mallory, join_id, state
    peer.close()


def auth_ids(state, *keys):
    return [state[k]["event_id"] for k in keys]


def message(peer, room, mallory, state, join_id, body, depth=10):
    return peer.new_event(room, mallory, "m.room.message", {"msgtype": "m.text", "body": body},
                          prev_events=[join_id], depth=depth,
                          auth_events=auth_ids(state, ("m.room.create", ""), ("m.room.power_levels", ""),
                                               ("m.room.member", mallory)))


def client_event(alice, room, event_id):
    return alice.call("GET", f"/_matrix/client/v3/rooms/{room}/event/{event_id}", expect=None)


def test_the_join_worked_and_a_good_event_is_taken(setting):
    ours, peer, alice, room, mallory, join_id, state = setting
    assert state[("m.room.member", mallory)]["content"]["membership"] == "join"
    event_id, event = peer.sign_event(message(peer, room, mallory, state, join_id, "honest"))
    r = peer.send_pdus(ours, [event])
    assert r.status_code == 200 and r.json()["pdus"] == {event_id: {}}, r.text
    alice.wait_for_message(room, "honest")
    # The same transaction again is answered the same, and changes nothing.
    assert peer.send_pdus(ours, [event]).json()["pdus"] == {event_id: {}}


def test_forged_signature_is_refused_and_not_stored(setting):
    ours, peer, alice, room, mallory, join_id, state = setting
    real_key = peer.key
    peer.key = signedjson.key.generate_signing_key(real_key.version)  # same key id, other key
    event_id, event = peer.sign_event(message(peer, room, mallory, state, join_id, "forged"))
    peer.key = real_key
    r = peer.send_pdus(ours, [event])
    assert r.status_code == 200, r.text
    assert "error" in r.json()["pdus"][event_id]
    assert client_event(alice, room, event_id).status_code == 404


def test_wrong_content_hash_keeps_the_event_redacted(setting):
    ours, peer, alice, room, mallory, join_id, state = setting
    event_id, event = peer.sign_event(message(peer, room, mallory, state, join_id, "original"))
    tampered = copy.deepcopy(event)
    tampered["content"]["body"] = "tampered"  # signatures cover the redacted form: still valid
    r = peer.send_pdus(ours, [tampered])
    assert r.status_code == 200 and r.json()["pdus"] == {event_id: {}}, r.text
    shown = alice.wait_for_event(room, lambda e: e["event_id"] == event_id, "the redacted event")
    assert shown["content"] == {}


def test_event_failing_auth_is_rejected_and_not_state(setting):
    ours, peer, alice, room, mallory, join_id, state = setting
    levels = state[("m.room.power_levels", "")]["content"]
    grab = dict(levels, users={**levels.get("users", {}), mallory: 100})
    event = peer.new_event(room, mallory, "m.room.power_levels", grab, prev_events=[join_id], depth=10,
                           state_key="", auth_events=auth_ids(state, ("m.room.create", ""),
                                                              ("m.room.power_levels", ""), ("m.room.member", mallory)))
    event_id, event = peer.sign_event(event)
    r = peer.send_pdus(ours, [event])
    assert r.status_code == 200 and "error" in r.json()["pdus"][event_id], r.text
    now = alice.call("GET", f"/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/").json()
    assert mallory not in now.get("users", {})
    assert client_event(alice, room, event_id).status_code == 404
    # An event built on the rejected one is rejected too.
    follow = peer.new_event(room, mallory, "m.room.name", {"name": "mine"}, prev_events=[event_id], depth=11,
                            state_key="", auth_events=[event_id] + auth_ids(state, ("m.room.create", ""),
                                                                            ("m.room.member", mallory)))
    follow_id, follow = peer.sign_event(follow)
    r = peer.send_pdus(ours, [follow])
    assert "error" in r.json()["pdus"][follow_id], r.text
    assert alice.state(room, "m.room.name", expect=404).status_code == 404


def test_soft_failed_event_is_stored_but_not_shown(setting):
    ours, peer, alice, room, mallory, join_id, state = setting
    alice.membership(room, "ban", mallory)
    # Built on the room as it was before the ban: allowed by its own past,
    # not by the current state.
    event_id, event = peer.sign_event(message(peer, room, mallory, state, join_id, "after my ban"))
    r = peer.send_pdus(ours, [event])
    assert r.status_code == 200 and r.json()["pdus"] == {event_id: {}}, r.text
    marker = alice.send(room, "marker")
    timeline = alice.messages(room)
    assert marker in [e["event_id"] for e in timeline]
    assert all(e.get("content", {}).get("body") != "after my ban" for e in timeline)
    # It is stored: the same event again is already known.
    assert peer.send_pdus(ours, [event]).json()["pdus"] == {event_id: {}}


def test_transaction_and_pdu_limits(setting):
    ours, peer, alice, room, mallory, join_id, state = setting
    events = [peer.sign_event(message(peer, room, mallory, state, join_id, f"m{i}"))[1] for i in range(51)]
    r = peer.send_pdus(ours, events)
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON", r.text
    assert alice.messages(room)[0]["content"].get("body") not in {f"m{i}" for i in range(51)}

    big = message(peer, room, mallory, state, join_id, "x" * 70_000)
    big_id, big = peer.sign_event(big)
    r = peer.send_pdus(ours, [big])
    assert r.status_code == 200 and "error" in r.json()["pdus"][big_id], r.text

    malformed = [
        {"type": "m.room.message", "room_id": room},  # no sender, depth, hashes...
        dict(message(peer, room, mallory, state, join_id, "bad depth"), depth="ten"),
        dict(message(peer, room, mallory, state, join_id, "no prevs"), prev_events="nope"),
        "not an object",
        {"room_id": "!unknown:nowhere.example", "type": "m.room.message"},
    ]
    r = peer.send_pdus(ours, malformed)
    assert r.status_code == 200, r.text
    # A float is not canonical JSON, so the request itself cannot be
    # verified: the whole transaction is refused, and nothing is taken.
    floats = dict(message(peer, room, mallory, state, join_id, "float"), origin_server_ts=1.5)
    r = peer.send_pdus(ours, [floats])
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON", r.text
    r = peer.request(ours, "PUT", f"/_matrix/federation/v1/send/{time.time_ns()}", {"pdus": "x"})
    assert r.status_code == 400, r.text
    r = peer.request(ours, "PUT", f"/_matrix/federation/v1/send/{time.time_ns()}",
                     {"origin": "someone.else", "pdus": [], "edus": []})
    assert r.status_code == 400, r.text
    # The room still works.
    alice.send(room, "still fine")
    alice.wait_for_message(room, "still fine")


def test_x_matrix_bad_signature_or_wrong_destination(setting):
    ours, peer, alice, room, mallory, join_id, state = setting
    path = "/_matrix/federation/v1/query/profile?user_id=" + alice.user_id
    assert peer.request(ours, "GET", path).status_code == 200
    import requests

    other = signedjson.key.generate_signing_key(peer.key.version)
    header = peer.x_matrix("GET", path, ours.server_name, key=other)
    r = requests.get(f"https://{ours.server_name}{path}", headers={"Authorization": header}, verify=False, timeout=10)
    assert r.status_code == 401 and r.json()["errcode"] == "M_UNAUTHORIZED", r.text
    header = peer.x_matrix("GET", path, "elsewhere.example")
    r = requests.get(f"https://{ours.server_name}{path}", headers={"Authorization": header}, verify=False, timeout=10)
    assert r.status_code == 401 and r.json()["errcode"] == "M_UNAUTHORIZED", r.text
    # The signature covers the URI: another query with the same header fails.
    header = peer.x_matrix("GET", path, ours.server_name)
    r = requests.get(f"https://{ours.server_name}{path}&field=displayname", headers={"Authorization": header},
                     verify=False, timeout=10)
    assert r.status_code == 401, r.text
    for bad in ["", "Bearer abc", 'X-Matrix origin="x"', "X-Matrix " + "a" * 5000]:
        r = requests.get(f"https://{ours.server_name}{path}", headers={"Authorization": bad}, verify=False,
                         timeout=10)
        assert r.status_code == 401, (bad, r.text)
    # An origin that cannot show a key.
    header = peer.x_matrix("GET", path, ours.server_name, origin="127.0.0.1:1")
    r = requests.get(f"https://{ours.server_name}{path}", headers={"Authorization": header}, verify=False, timeout=10)
    assert r.status_code == 401, r.text


def test_room_data_goes_only_to_servers_in_the_room(setting, tmp_path):
    ours, peer, alice, room, mallory, join_id, state = setting
    stranger = FakePeer(tmp_path / "stranger")
    try:
        create = state[("m.room.create", "")]["event_id"]
        for path in [f"/_matrix/federation/v1/event/{create}",
                     f"/_matrix/federation/v1/state_ids/{room}?event_id={create}",
                     f"/_matrix/federation/v1/backfill/{room}?v={join_id}&limit=5"]:
            assert peer.request(ours, "GET", path).status_code == 200, path
            r = stranger.request(ours, "GET", path)
            assert r.status_code in (403, 404) or r.json().get("pdus") == [], (path, r.text)
    finally:
        stranger.close()


def test_federation_off_closes_every_route(make_server, tmp_path):
    env = federation_env(tmp_path)
    ours = make_server({**env, "CONDUIT_ALLOW_FEDERATION": "false"})
    peer = FakePeer(tmp_path / "peer")
    try:
        for path in ["/_matrix/key/v2/server", "/_matrix/federation/v1/version"]:
            r = ours.request("GET", path)
            assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN", r.text
        r = peer.request(ours, "GET", "/_matrix/federation/v1/query/profile?user_id=@a:b")
        assert r.status_code == 403, r.text
    finally:
        peer.close()


def test_server_acl_keeps_a_denied_server_out(make_server, tmp_path):
    ours = make_server(federation_env(tmp_path, host="127.0.0.3"))
    peer = FakePeer(tmp_path / "peer")
    try:
        alice = register(ours.url, unique("alice"))
        room = alice.create_room(preset="public_chat")
        mallory = f"@mallory:{peer.server_name}"
        join_id, _ = peer.join(ours, room, mallory)
        state = {(e["type"], e.get("state_key")): e for e in alice.call(
            "GET", f"/_matrix/client/v3/rooms/{room}/state").json()}
        alice.state(room, "m.room.server_acl", content={"allow": ["*"], "deny": ["127.0.0.1"]})
        event_id, event = peer.sign_event(message(peer, room, mallory, state, join_id, "denied"))
        r = peer.send_pdus(ours, [event], edus=[{"edu_type": "m.typing", "content": {
            "room_id": room, "user_id": mallory, "typing": True}}])
        assert r.status_code == 200 and "ACL" in r.json()["pdus"][event_id]["error"], r.text
        assert client_event(alice, room, event_id).status_code == 404
        # The ACL'd endpoints refuse it too.
        r = peer.request(ours, "GET", f"/_matrix/federation/v1/state_ids/{room}?event_id={join_id}")
        assert r.status_code == 403, r.text
        r = peer.request(ours, "GET", f"/_matrix/federation/v1/make_join/{room}/{mallory}?ver=11")
        assert r.status_code == 403, r.text
        body = alice.sync()
        typing = body["rooms"]["join"][room].get("ephemeral", {}).get("events", [])
        assert all(mallory not in e["content"].get("user_ids", []) for e in typing)
    finally:
        peer.close()


def test_devices_and_keys_for_other_servers_and_hostile_e2ee_edus(setting):
    ours, peer, alice, room, mallory, join_id, state = setting
    device = Device(ours.url, alice.user_id, alice.token,
                    alice.call("GET", "/_matrix/client/v3/account/whoami").json()["device_id"])
    device.call("POST", "/keys/upload", json={
        "device_keys": device.device_keys(),
        "one_time_keys": {"signed_curve25519:K1": device.signed_key("K1")},
    })
    r = peer.request(ours, "GET", f"/_matrix/federation/v1/user/devices/{alice.user_id}")
    assert r.status_code == 200, r.text
    listed = r.json()
    assert listed["user_id"] == alice.user_id and listed["stream_id"] > 0
    assert [d["device_id"] for d in listed["devices"]] == [device.device_id]
    assert listed["devices"][0]["keys"]["keys"][f"ed25519:{device.device_id}"] == device.public
    r = peer.request(ours, "GET", f"/_matrix/federation/v1/user/devices/@nobody:{ours.server_name}")
    assert r.status_code == 404, r.text
    # Only this server's users are answered for; no display names, no
    # user-signing keys go to other servers.
    r = peer.request(ours, "POST", "/_matrix/federation/v1/user/keys/query",
                     {"device_keys": {alice.user_id: [], "@x:elsewhere.example": []}})
    assert r.status_code == 200, r.text
    assert list(r.json()["device_keys"]) == [alice.user_id] and "user_signing_keys" not in r.json()
    assert "unsigned" not in r.json()["device_keys"][alice.user_id][device.device_id]
    claim = {"one_time_keys": {alice.user_id: {device.device_id: "signed_curve25519", "NODEVICE": "signed_curve25519"},
                               "@x:elsewhere.example": {"D": "signed_curve25519"}}}
    r = peer.request(ours, "POST", "/_matrix/federation/v1/user/keys/claim", claim)
    assert r.status_code == 200, r.text
    assert r.json()["one_time_keys"] == {alice.user_id: {device.device_id: {
        "signed_curve25519:K1": device.signed_key("K1")}}}

    since = device.sync()["next_batch"]
    to_alice = {"messages": {alice.user_id: {device.device_id: {"hello": True}}}}
    edus = [
        # A sender of another server: not the peer's to speak for.
        {"edu_type": "m.direct_to_device",
         "content": {"sender": "@eve:elsewhere.example", "type": "m.forged", "message_id": "m1", **to_alice}},
        {"edu_type": "m.direct_to_device",
         "content": {"sender": mallory, "type": "m.test", "message_id": "m2", **to_alice}},
        # Another server's user's devices, and garbage, are ignored.
        {"edu_type": "m.device_list_update",
         "content": {"user_id": alice.user_id, "device_id": device.device_id, "stream_id": 99, "deleted": True}},
        {"edu_type": "m.signing_key_update", "content": {"user_id": alice.user_id, "master_key": {"x": 1}}},
        {"edu_type": "m.device_list_update", "content": "not an object"},
    ]
    assert peer.send_pdus(ours, [], edus).status_code == 200
    # The same message id again is not delivered twice.
    assert peer.send_pdus(ours, [], edus[1:2]).status_code == 200
    body = device.call("GET", "/sync", params={"since": since, "timeout": "5000"}).json()
    assert [(e["sender"], e["type"]) for e in body["to_device"]["events"]] == [(mallory, "m.test")]
    r = device.call("POST", "/keys/query", json={"device_keys": {alice.user_id: []}}).json()
    assert device.device_id in r["device_keys"][alice.user_id]
    assert alice.user_id not in r["master_keys"]


def test_remote_device_lists_are_kept_and_fetched_again_after_a_gap(setting):
    ours, peer, alice, room, mallory, join_id, state = setting
    device = Device(ours.url, alice.user_id, alice.token,
                    alice.call("GET", "/_matrix/client/v3/account/whoami").json()["device_id"])

    def keys(device_id: str) -> dict:
        return {"user_id": mallory, "device_id": device_id, "algorithms": ["m.megolm.v1.aes-sha2"],
                "keys": {f"ed25519:{device_id}": "k" + device_id}, "signatures": {}}

    def devices() -> list[str]:
        answer = device.call("POST", "/keys/query", json={"device_keys": {mallory: []}}).json()
        assert answer["failures"] == {}, answer
        return sorted(answer["device_keys"][mallory])

    peer.device_lists[mallory] = {"user_id": mallory, "stream_id": 5,
                                  "devices": [{"device_id": "M1", "keys": keys("M1")}]}
    # A user in a room with us: the list is fetched once and kept.
    assert devices() == ["M1"] and peer.device_list_hits == 1
    assert devices() == ["M1"] and peer.device_list_hits == 1
    since = device.sync()["next_batch"]

    def update(device_id: str, stream_id: int, prev: list[int], **extra) -> dict:
        return {"edu_type": "m.device_list_update",
                "content": {"user_id": mallory, "device_id": device_id, "stream_id": stream_id,
                            "prev_id": prev, "deleted": False, "keys": keys(device_id), **extra}}

    def changed(since: str) -> str:
        body = device.call("GET", "/sync", params={"since": since, "timeout": "5000"}).json()
        assert mallory in body["device_lists"]["changed"], body["device_lists"]
        return body["next_batch"]

    # An update that follows what is kept applies as it is.
    assert peer.send_pdus(ours, [], [update("M2", 6, [5])]).status_code == 200
    since = changed(since)
    assert devices() == ["M1", "M2"] and peer.device_list_hits == 1
    # One that does not (stream 7 never came): the whole list again.
    peer.device_lists[mallory] = {"user_id": mallory, "stream_id": 8,
                                  "devices": [{"device_id": "M3", "keys": keys("M3")}]}
    assert peer.send_pdus(ours, [], [update("M3", 8, [7])]).status_code == 200
    since = changed(since)
    deadline = time.monotonic() + 10
    while devices() != ["M3"]:
        assert time.monotonic() < deadline, devices()
        time.sleep(0.2)
    assert peer.device_list_hits == 2
    # An old update changes nothing; a deletion that follows applies.
    assert peer.send_pdus(ours, [], [update("M9", 4, [3])]).status_code == 200
    assert peer.send_pdus(ours, [], [update("M3", 9, [8], deleted=True)]).status_code == 200
    changed(since)
    assert devices() == []


def test_room_directory_over_federation_only_when_allowed(make_server, tmp_path):
    peer = FakePeer(tmp_path / "peer")
    try:
        closed = make_server({**federation_env(tmp_path / "a"), "CONDUIT_ALLOW_PUBLIC_ROOMS_OVER_FEDERATION": "false"})
        r = peer.request(closed, "GET", "/_matrix/federation/v1/publicRooms")
        assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN", r.text
        opened = make_server(federation_env(tmp_path / "b"))
        alice = register(opened.url, unique("alice"))
        room = alice.create_room(preset="public_chat", name="listed", visibility="public")
        r = peer.request(opened, "GET", "/_matrix/federation/v1/publicRooms?limit=5")
        assert r.status_code == 200 and [c["room_id"] for c in r.json()["chunk"]] == [room], r.text
        r = peer.request(opened, "POST", "/_matrix/federation/v1/publicRooms",
                         {"filter": {"generic_search_term": "nope"}})
        assert r.status_code == 200 and r.json()["chunk"] == [], r.text
    finally:
        peer.close()


def test_allow_and_deny_lists(make_server, tmp_path):
    peer = FakePeer(tmp_path / "peer")
    try:
        path = "/_matrix/federation/v1/version"
        denied = make_server({**federation_env(tmp_path / "a"),
                              "CONDUIT_FEDERATION_DOMAIN_DENYLIST": f'["{peer.server_name}"]'})
        alice = register(denied.url, unique("alice"))
        probe = "/_matrix/federation/v1/query/profile?user_id=" + alice.user_id
        r = peer.request(denied, "GET", probe)
        assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN", r.text
        # Nor do we ask it anything: a join through it is refused here.
        r = alice.call("POST", f"/_matrix/client/v3/join/!room:{peer.server_name}", json={}, expect=None)
        assert r.status_code == 404, r.text
        allowed = make_server({**federation_env(tmp_path / "b"),
                               "CONDUIT_FEDERATION_DOMAIN_ALLOWLIST": '["elsewhere.example"]'})
        r = peer.request(allowed, "GET", probe.replace(denied.server_name, allowed.server_name))
        assert r.status_code == 403, r.text
        assert allowed.request("GET", path).status_code == 200
    finally:
        peer.close()


def test_timestamp_to_event_for_clients_and_servers(setting):
    ours, peer, alice, room, mallory, join_id, state = setting
    stamps = []
    for i in range(5):
        event_id = alice.send(room, f"at {i}")
        event = alice.call("GET", f"/_matrix/client/v3/rooms/{room}/event/{event_id}").json()
        stamps.append((event_id, event["origin_server_ts"]))
        time.sleep(0.02)
    (second, second_ts), (third, third_ts) = stamps[1], stamps[2]
    between = (second_ts + third_ts) // 2 if third_ts > second_ts + 1 else second_ts
    path = f"/_matrix/client/v1/rooms/{room}/timestamp_to_event"
    found = alice.call("GET", path, params={"ts": second_ts, "dir": "f"}).json()
    assert found == {"event_id": second, "origin_server_ts": second_ts}
    found = alice.call("GET", path, params={"ts": third_ts, "dir": "b"}).json()
    assert found["event_id"] == third
    if between > second_ts:
        assert alice.call("GET", path, params={"ts": between, "dir": "b"}).json()["event_id"] == second
        assert alice.call("GET", path, params={"ts": between, "dir": "f"}).json()["event_id"] == third
    r = alice.call("GET", path, params={"ts": stamps[-1][1] + 60_000, "dir": "f"}, expect=404)
    assert r.json()["errcode"] == "M_NOT_FOUND"
    # The same for a server in the room.
    r = peer.request(ours, "GET", f"/_matrix/federation/v1/timestamp_to_event/{room}?ts={second_ts}&dir=f")
    assert r.status_code == 200 and r.json()["event_id"] == second, r.text
    r = peer.request(ours, "GET", f"/_matrix/federation/v1/timestamp_to_event/{room}?ts=1&dir=x")
    assert r.status_code == 400, r.text


def test_openid_tokens_name_their_user(setting):
    ours, peer, alice, room, mallory, join_id, state = setting
    answer = alice.call("POST", f"/_matrix/client/v3/user/{alice.user_id}/openid/request_token", json={}).json()
    assert answer["token_type"] == "Bearer" and answer["matrix_server_name"] == ours.server_name
    assert answer["expires_in"] == 3600
    # A third party asks with the token alone (no X-Matrix).
    r = ours.request("GET", "/_matrix/federation/v1/openid/userinfo", params={"access_token": answer["access_token"]})
    assert r.status_code == 200 and r.json() == {"sub": alice.user_id}, r.text
    r = ours.request("GET", "/_matrix/federation/v1/openid/userinfo", params={"access_token": "nope"})
    assert r.status_code == 401 and r.json()["errcode"] == "M_UNKNOWN_TOKEN", r.text
    r = alice.call("POST", f"/_matrix/client/v3/user/@other:{ours.server_name}/openid/request_token", json={},
                   expect=403)
    assert r.json()["errcode"] == "M_FORBIDDEN"


def test_a_server_is_found_through_its_well_known(make_server, tmp_path):
    """A peer named `localhost` (no port): its key is found through
    https://localhost/.well-known/matrix/server, which delegates to its IP
    and port; the key is kept, and not fetched again on anyone's say-so."""
    ours = make_server(federation_env(tmp_path))
    peer = FakePeer(tmp_path / "peer", server_name="localhost")
    try:
        peer.serve_well_known()
        alice = register(ours.url, unique("alice"))
        path = "/_matrix/federation/v1/query/profile?user_id=" + alice.user_id
        r = peer.request(ours, "GET", path)
        assert r.status_code == 200, r.text
        assert peer.well_known_hits == 1 and peer.key_hits == 1
        # The key is kept: the next request is checked without asking again.
        assert peer.request(ours, "GET", path).status_code == 200
        assert peer.well_known_hits == 1 and peer.key_hits == 1
        # Nor does anyone make us ask it again within minutes: not a notary
        # query for keys valid longer, nor a header naming another key id.
        far = int(time.time() * 1000) + 30 * 24 * 3600 * 1000
        r = ours.request("POST", "/_matrix/key/v2/query",
                         json={"server_keys": {"localhost": {"ed25519:any": {"minimum_valid_until_ts": far}}}})
        assert r.status_code == 200 and r.json()["server_keys"][0]["server_name"] == "localhost", r.text
        other = signedjson.key.generate_signing_key("other")
        header = peer.x_matrix("GET", path, ours.server_name, key=other)
        import requests
        r = requests.get(f"https://{ours.server_name}{path}", headers={"Authorization": header}, verify=False,
                         timeout=10)
        assert r.status_code == 401, r.text
        assert peer.key_hits == 1
    finally:
        peer.close()


def test_a_huge_depth_does_not_stop_the_room(setting):
    ours, peer, alice, room, mallory, join_id, state = setting
    event_id, event = peer.sign_event(message(peer, room, mallory, state, join_id, "deep", depth=2**53 - 1))
    assert peer.send_pdus(ours, [event]).json()["pdus"] == {event_id: {}}
    alice.wait_for_message(room, "deep")
    after = alice.send(room, "still sending")
    assert alice.call("GET", f"/_matrix/client/v3/rooms/{room}/event/{after}").status_code == 200


def test_restricted_join_without_make_join_is_not_countersigned(make_server, tmp_path):
    ours = make_server(federation_env(tmp_path))
    peer = FakePeer(tmp_path / "peer")
    try:
        alice = register(ours.url, unique("alice"))
        space = alice.create_room(preset="public_chat")
        rule = {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}
        room = alice.create_room(preset="private_chat", room_version="10", initial_state=[
            {"type": "m.room.join_rules", "state_key": "", "content": rule}])
        mallory = f"@mallory:{peer.server_name}"
        # make_join refuses: mallory is in none of the allowed rooms.
        r = peer.request(ours, "GET", f"/_matrix/federation/v1/make_join/{room}/{mallory}?ver=10")
        assert r.status_code == 400 and r.json()["errcode"] == "M_UNABLE_TO_GRANT_JOIN", r.text
        # A join built by hand that names alice as its authoriser is refused too.
        state = {(e["type"], e.get("state_key")): e for e in alice.call(
            "GET", f"/_matrix/client/v3/rooms/{room}/state").json()}
        head = alice.messages(room, limit=1)[0]["event_id"]
        join = peer.new_event(room, mallory, "m.room.member",
                              {"membership": "join", "join_authorised_via_users_server": alice.user_id},
                              prev_events=[head], depth=20, state_key=mallory,
                              auth_events=[state[k]["event_id"] for k in [
                                  ("m.room.create", ""), ("m.room.power_levels", ""),
                                  ("m.room.join_rules", ""), ("m.room.member", alice.user_id)]])
        join["origin"] = peer.server_name
        join_id, join = peer.sign_event(join, "10")
        r = peer.request(ours, "PUT", f"/_matrix/federation/v2/send_join/{room}/{join_id}", join)
        assert r.status_code == 400 and r.json()["errcode"] == "M_UNABLE_TO_GRANT_JOIN", r.text
        assert mallory not in {e["state_key"] for e in alice.call(
            "GET", f"/_matrix/client/v3/rooms/{room}/members").json()["chunk"]}
    finally:
        peer.close()
