"""Simplified sliding sync (MSC4186) over raw HTTP: lists sorted by recency
and cut to ranges, rooms sent whole once and then only with what changed,
required_state (with $LAZY and $ME) and its changes, room subscriptions,
filters, the connection's positions (retries, M_UNKNOWN_POS, two
connections of one device), the long-poll and the extensions."""

import threading
import time
from urllib.parse import quote

from conftest import unique
from e2ee_raw import Device

CS = "/_matrix/client/v3"
SSS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
BASIC_STATE = [["m.room.name", ""], ["m.room.member", "$ME"]]


def ss(server, token, body, pos=None, timeout=None, status=200):
    params = {}
    if pos is not None:
        params["pos"] = pos
    if timeout is not None:
        params["timeout"] = timeout
    r = server.request("POST", SSS, token=token, params=params, json=body)
    assert r.status_code == status, r.text
    return r.json()


def a_list(ranges, limit=1, state=None, **extra):
    return {"ranges": ranges, "timeline_limit": limit, "required_state": state or BASIC_STATE, **extra}


def room_with(server, token, name=None, **extra):
    body = {"preset": "private_chat", **extra}
    if name:
        body["name"] = name
    r = server.request("POST", f"{CS}/createRoom", token=token, json=body)
    assert r.status_code == 200, r.text
    return r.json()["room_id"]


def send(server, token, room, body, kind="m.room.message"):
    content = {"msgtype": "m.text", "body": body} if kind == "m.room.message" else body
    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/send/{kind}/{unique('t')}", token=token, json=content)
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def put_state(server, token, room, kind, content, key=""):
    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/state/{kind}/{quote(key)}", token=token, json=content)
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def bodies(room):
    return [e["content"].get("body") for e in room.get("timeline", []) if e["type"] == "m.room.message"]


def test_versions_advertise_simplified_sliding_sync(server):
    features = server.request("GET", "/_matrix/client/versions").json()["unstable_features"]
    assert features.get("org.matrix.simplified_msc3575") is True


def test_lists_are_sorted_by_recency_and_ranges_move_as_rooms_bump(server):
    me = server.register(unique("alice"))["access_token"]
    rooms = [room_with(server, me, name=f"room {i}") for i in range(4)]
    for i, room in enumerate(rooms):
        send(server, me, room, f"hello {i}")
    # A state change does not bump a room.
    put_state(server, me, rooms[0], "m.room.topic", {"topic": "not news"})
    body = {"conn_id": "main", "lists": {"all": a_list([[0, 1]], limit=5)}}

    first = ss(server, me, body)
    assert first["lists"]["all"]["count"] == 4
    assert set(first["rooms"]) == {rooms[3], rooms[2]}, "the two newest by bump stamp"
    r3 = first["rooms"][rooms[3]]
    assert r3["initial"] is True and r3["name"] == "room 3"
    assert bodies(r3) == ["hello 3"] and r3["limited"] is True and r3["num_live"] == 0
    assert first["rooms"][rooms[3]]["bump_stamp"] > first["rooms"][rooms[2]]["bump_stamp"]
    assert [e["type"] for e in r3["required_state"]] == ["m.room.name", "m.room.member"] or {
        e["type"] for e in r3["required_state"]
    } == {"m.room.name", "m.room.member"}
    assert r3["joined_count"] == 1 and r3["invited_count"] == 0
    # prev_batch continues the timeline with /messages.
    page = server.request(
        "GET", f"{CS}/rooms/{quote(rooms[3])}/messages", token=me, params={"from": r3["prev_batch"], "dir": "b", "limit": 50}
    ).json()
    assert "m.room.create" in [e["type"] for e in page["chunk"]]

    # Nothing new: an empty answer (with a new pos) after the timeout.
    quiet = ss(server, me, body, pos=first["pos"], timeout=0)
    assert quiet["rooms"] == {} and quiet["lists"]["all"]["count"] == 4

    # The oldest room speaks: it moves into the range, sent whole.
    send(server, me, rooms[0], "back on top")
    moved = ss(server, me, body, pos=quiet["pos"], timeout=0)
    assert set(moved["rooms"]) == {rooms[0]}
    assert moved["rooms"][rooms[0]]["initial"] is True
    assert bodies(moved["rooms"][rooms[0]]) == ["hello 0", "back on top"]

    # A room already sent gets only its new event, marked live.
    send(server, me, rooms[3], "more")
    again = ss(server, me, body, pos=moved["pos"], timeout=0)
    assert set(again["rooms"]) == {rooms[3]}
    r3 = again["rooms"][rooms[3]]
    assert "initial" not in r3 and bodies(r3) == ["more"]
    assert r3["num_live"] == 1 and r3["limited"] is False
    assert "required_state" not in r3, "no state changed"

    # The room that left the range and came back gets what it missed.
    send(server, me, rooms[2], "missed 1")
    send(server, me, rooms[1], "unseen")
    for i in range(2):
        send(server, me, rooms[0], f"noise {i}")
        send(server, me, rooms[3], f"noise {i}")
    out_of_range = ss(server, me, body, pos=again["pos"], timeout=0)
    assert set(out_of_range["rooms"]) == {rooms[0], rooms[3]}
    send(server, me, rooms[2], "missed 2")
    wide = dict(body, lists={"all": a_list([[0, 3]], limit=5)})
    back = ss(server, me, wide, pos=out_of_range["pos"], timeout=0)
    assert bodies(back["rooms"][rooms[2]]) == ["missed 1", "missed 2"]
    assert "initial" not in back["rooms"][rooms[2]]
    assert back["rooms"][rooms[1]]["initial"] is True

    # A longer timeline than the room was sent with: sent again, marked.
    longer = dict(body, lists={"all": a_list([[0, 0]], limit=8)})
    expanded = ss(server, me, longer, pos=back["pos"], timeout=0)
    top = expanded["rooms"][rooms[2]]
    assert top["unstable_expanded_timeline"] is True and "initial" not in top
    assert bodies(top) == ["hello 2", "missed 1", "missed 2"]


def test_required_state_changes_between_requests_and_lazy_members(server):
    alice = server.register(unique("alice"))
    bob = server.register(unique("bob"))
    carol = server.register(unique("carol"))
    a = alice["access_token"]
    room = room_with(server, a, name="talk", preset="public_chat", topic="first topic")
    assert server.request("POST", f"{CS}/rooms/{quote(room)}/join", token=bob["access_token"], json={}).status_code == 200
    send(server, bob["access_token"], room, "bob speaks")
    lazy = [["m.room.name", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"]]
    body = {"lists": {"l": a_list([[0, 0]], limit=2, state=lazy)}}
    first = ss(server, a, body)
    state = first["rooms"][room]["required_state"]
    members = {e["state_key"] for e in state if e["type"] == "m.room.member"}
    assert members == {alice["user_id"], bob["user_id"]}, "me and the sender, no one else"
    assert "m.room.topic" not in {e["type"] for e in state}

    # The client now asks for the topic too: it is sent without any event.
    wider = {"lists": {"l": a_list([[0, 0]], limit=2, state=lazy + [["m.room.topic", ""]])}}
    widened = ss(server, a, wider, pos=first["pos"], timeout=0)
    r = widened["rooms"][room]
    assert [e["content"]["topic"] for e in r["required_state"] if e["type"] == "m.room.topic"] == ["first topic"]
    assert "timeline" not in r and "initial" not in r

    # A topic change comes as state; bob's member event is not sent again,
    # carol's comes when she speaks.
    assert server.request("POST", f"{CS}/rooms/{quote(room)}/join", token=carol["access_token"], json={}).status_code == 200
    put_state(server, a, room, "m.room.topic", {"topic": "second topic"})
    send(server, bob["access_token"], room, "bob again")
    send(server, carol["access_token"], room, "carol speaks")
    later = ss(server, a, wider, pos=widened["pos"], timeout=0)
    r = later["rooms"][room]
    assert bodies(r) == ["bob again", "carol speaks"]
    types = [(e["type"], e["state_key"]) for e in r["required_state"]]
    assert ("m.room.topic", "") in types and ("m.room.member", carol["user_id"]) in types
    assert ("m.room.member", bob["user_id"]) not in types

    # A narrower config sends nothing new; the topic is no longer followed.
    narrow = ss(server, a, body, pos=later["pos"], timeout=0)
    assert narrow["rooms"] == {}
    put_state(server, a, room, "m.room.topic", {"topic": "third topic"})
    send(server, a, room, "hi")
    quiet = ss(server, a, body, pos=narrow["pos"], timeout=0)
    assert ("m.room.topic", "") not in [(e["type"], e["state_key"]) for e in quiet["rooms"][room].get("required_state", [])]

    # ["*", "*"] is the whole state.
    everything = ss(server, a, {"lists": {"l": a_list([[0, 0]], state=[["*", "*"]])}})
    kinds = {e["type"] for e in everything["rooms"][room]["required_state"]}
    assert {"m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.topic"} <= kinds
    assert len([e for e in everything["rooms"][room]["required_state"] if e["type"] == "m.room.member"]) == 3


def test_room_subscriptions_and_unsubscribe_rooms(server):
    me = server.register(unique("alice"))["access_token"]
    quiet_room = room_with(server, me, name="subscribed")
    send(server, me, quiet_room, "old news")
    busy = room_with(server, me, name="busy")
    send(server, me, busy, "newest")
    sub = {"timeline_limit": 5, "required_state": [["m.room.name", ""]]}
    top = a_list([[0, 0]], filters={"room_name_like": "busy"})
    body = {"lists": {"top": top}, "room_subscriptions": {quiet_room: sub}}
    first = ss(server, me, body)
    assert set(first["rooms"]) == {busy, quiet_room}
    assert bodies(first["rooms"][quiet_room]) == ["old news"]
    assert first["rooms"][quiet_room]["name"] == "subscribed"

    send(server, me, quiet_room, "seen by the subscription")
    second = ss(server, me, body, pos=first["pos"], timeout=0)
    assert bodies(second["rooms"][quiet_room]) == ["seen by the subscription"]

    # Unsubscribed: its news no longer comes, even named again.
    body["unsubscribe_rooms"] = [quiet_room]
    send(server, me, quiet_room, "unheard")
    third = ss(server, me, body, pos=second["pos"], timeout=300)
    assert third["rooms"] == {}
    # Subscribing again brings what it missed.
    del body["unsubscribe_rooms"]
    fourth = ss(server, me, body, pos=third["pos"], timeout=0)
    assert bodies(fourth["rooms"][quiet_room]) == ["unheard"]

    # A room the user is not in is ignored.
    other = server.register(unique("bob"))["access_token"]
    foreign = room_with(server, other)
    alone = ss(server, me, {"room_subscriptions": {foreign: sub}})
    assert alone["rooms"] == {}


def test_positions_retries_unknown_pos_and_two_connections(server):
    me = server.register(unique("alice"))
    token = me["access_token"]
    room = room_with(server, token, name="r")
    body = {"conn_id": "a", "lists": {"l": a_list([[0, 9]])}}
    first = ss(server, token, body)
    send(server, token, room, "one")
    second = ss(server, token, body, pos=first["pos"], timeout=0)
    assert bodies(second["rooms"][room]) == ["one"]
    # The answer was lost: the same pos again gives the same news.
    retry = ss(server, token, body, pos=first["pos"], timeout=0)
    assert bodies(retry["rooms"][room]) == ["one"]
    # The unused answer's pos is gone; the retry's works.
    gone = ss(server, token, body, pos=second["pos"], timeout=0, status=400)
    assert gone["errcode"] == "M_UNKNOWN_POS"
    ss(server, token, body, pos=retry["pos"], timeout=0)
    # An old pos after a newer one was used is unknown too.
    assert ss(server, token, body, pos=first["pos"], timeout=0, status=400)["errcode"] == "M_UNKNOWN_POS"
    assert ss(server, token, body, pos="123456", status=400)["errcode"] == "M_UNKNOWN_POS"
    assert ss(server, token, body, pos="junk", status=400)["errcode"] == "M_UNKNOWN_POS"

    # Two connections of one device keep their own positions.
    b_body = {"conn_id": "b", "lists": {"l": a_list([[0, 9]])}}
    b1 = ss(server, token, b_body)
    assert room in b1["rooms"], "a new connection is sent everything"
    assert ss(server, token, b_body, pos=retry["pos"], status=400)["errcode"] == "M_UNKNOWN_POS"
    a_next = ss(server, token, body, pos=retry["pos"], timeout=0)
    send(server, token, room, "two")
    assert bodies(ss(server, token, b_body, pos=b1["pos"], timeout=0)["rooms"][room]) == ["two"]
    assert bodies(ss(server, token, body, pos=a_next["pos"], timeout=0)["rooms"][room]) == ["two"]

    # Another device of the same user does not know the positions.
    other = server.login(me["user_id"].split(":")[0][1:]).json()["access_token"]
    assert ss(server, other, body, pos=a_next["pos"], status=400)["errcode"] == "M_UNKNOWN_POS"
    # A restart forgets every connection.
    server.stop()
    server.start()
    assert ss(server, token, body, pos=a_next["pos"], status=400)["errcode"] == "M_UNKNOWN_POS"


def test_long_poll_returns_when_a_room_changes(server):
    me = server.register(unique("alice"))["access_token"]
    room = room_with(server, me, name="r")
    body = {"lists": {"l": a_list([[0, 9]])}}
    first = ss(server, me, body)
    started = time.monotonic()
    threading.Timer(0.5, lambda: send(server, me, room, "wake up")).start()
    woken = ss(server, me, body, pos=first["pos"], timeout=20000)
    assert bodies(woken["rooms"][room]) == ["wake up"]
    assert time.monotonic() - started < 10
    # A room outside the range that moves into it wakes the poll too.
    other = room_with(server, me, name="other")
    narrow = {"lists": {"l": a_list([[0, 0]])}}
    seen = ss(server, me, narrow, pos=woken["pos"], timeout=0)
    send(server, me, room, "room on top again")
    seen = ss(server, me, narrow, pos=seen["pos"], timeout=0)
    assert set(seen["rooms"]) == {room}
    started = time.monotonic()
    threading.Timer(0.5, lambda: send(server, me, other, "from below")).start()
    moved = ss(server, me, narrow, pos=seen["pos"], timeout=20000)
    assert bodies(moved["rooms"][other])[-1] == "from below"
    assert time.monotonic() - started < 10
    woken = moved
    # A timeout with nothing new answers empty.
    started = time.monotonic()
    empty = ss(server, me, narrow, pos=woken["pos"], timeout=400)
    assert empty["rooms"] == {} and time.monotonic() - started >= 0.35


def test_invites_joins_and_leaves(server):
    alice = server.register(unique("alice"))
    bob = server.register(unique("bob"))
    a, b = alice["access_token"], bob["access_token"]
    room = room_with(server, a, name="party")
    body = {"lists": {"l": a_list([[0, 9]], limit=3)}}
    first = ss(server, b, body)
    assert first["rooms"] == {} and first["lists"]["l"]["count"] == 0
    assert server.request("POST", f"{CS}/rooms/{quote(room)}/invite", token=a, json={"user_id": bob["user_id"]}).status_code == 200
    invited = ss(server, b, body, pos=first["pos"], timeout=5000)
    r = invited["rooms"][room]
    state = {(e["type"], e.get("state_key")): e for e in r["invite_state"]}
    assert state[("m.room.name", "")]["content"]["name"] == "party"
    assert state[("m.room.member", bob["user_id"])]["content"]["membership"] == "invite"
    assert "timeline" not in r and isinstance(r["bump_stamp"], int)
    # Sent once.
    assert ss(server, b, body, pos=invited["pos"], timeout=0)["rooms"] == {}
    only_invites = {"lists": {"l": a_list([[0, 9]], filters={"is_invite": True})}}
    only_invites["conn_id"] = "invites"
    assert ss(server, b, only_invites)["lists"]["l"]["count"] == 1

    assert server.request("POST", f"{CS}/rooms/{quote(room)}/join", token=b, json={}).status_code == 200
    joined = ss(server, b, body, pos=invited["pos"], timeout=0)
    r = joined["rooms"][room]
    assert r["initial"] is True and "invite_state" not in r
    assert r["timeline"][-1]["type"] == "m.room.member" and r["joined_count"] == 2
    assert ss(server, b, only_invites)["lists"]["l"]["count"] == 0

    # Leaving shows the room once more, with the leave, then never.
    assert server.request("POST", f"{CS}/rooms/{quote(room)}/leave", token=b, json={}).status_code == 200
    left = ss(server, b, body, pos=joined["pos"], timeout=0)
    leave = left["rooms"][room]["timeline"][-1]
    assert leave["type"] == "m.room.member" and leave["content"]["membership"] == "leave"
    send(server, a, room, "after bob left")
    gone = ss(server, b, body, pos=left["pos"], timeout=0)
    assert gone["rooms"] == {} and gone["lists"]["l"]["count"] == 0
    assert ss(server, b, dict(body, conn_id="fresh"))["lists"]["l"]["count"] == 0, "a fresh connection does not list it"


def test_filters(server):
    alice = server.register(unique("alice"))
    bob = server.register(unique("bob"))
    a = alice["access_token"]
    plain = room_with(server, a, name="plain")
    encrypted = room_with(
        server, a, name="secret", initial_state=[{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]
    )
    space = room_with(server, a, name="space", creation_content={"type": "m.space"})
    dm = room_with(server, a, is_direct=True, invite=[bob["user_id"]])
    server_name = alice["user_id"].split(":", 1)[1]
    put_state(server, a, space, "m.space.child", {"via": [server_name]}, key=plain)
    r = server.request("PUT", f"{CS}/user/{quote(alice['user_id'])}/account_data/m.direct", token=a, json={bob["user_id"]: [dm]})
    assert r.status_code == 200
    r = server.request("PUT", f"{CS}/user/{quote(alice['user_id'])}/rooms/{quote(encrypted)}/tags/m.favourite", token=a, json={})
    assert r.status_code == 200

    def listed(filters):
        answer = ss(server, a, {"lists": {"l": a_list([[0, 9]], filters=filters)}})
        assert answer["lists"]["l"]["count"] == len(answer["rooms"])
        return set(answer["rooms"])

    assert listed({}) == {plain, encrypted, space, dm}
    assert listed({"is_encrypted": True}) == {encrypted}
    assert listed({"is_encrypted": False}) == {plain, space, dm}
    assert listed({"is_dm": True}) == {dm}
    assert listed({"is_dm": False}) == {plain, encrypted, space}
    assert listed({"room_types": ["m.space"]}) == {space}
    assert listed({"room_types": [None]}) == {plain, encrypted, dm}
    assert listed({"not_room_types": ["m.space"]}) == {plain, encrypted, dm}
    assert listed({"spaces": [space]}) == {plain}
    assert listed({"tags": ["m.favourite"]}) == {encrypted}
    assert listed({"not_tags": ["m.favourite"]}) == {plain, space, dm}
    assert listed({"room_name_like": "SEC"}) == {encrypted}
    # Room tags: another one kept beside the first, then the first removed.
    tags_path = f"{CS}/user/{quote(alice['user_id'])}/rooms/{quote(encrypted)}/tags"
    assert server.request("PUT", f"{tags_path}/u.work", token=a, json={"order": 0.5}).status_code == 200
    assert server.request("GET", tags_path, token=a).json() == {"tags": {"m.favourite": {}, "u.work": {"order": 0.5}}}
    assert server.request("DELETE", f"{tags_path}/m.favourite", token=a).status_code == 200
    assert server.request("GET", tags_path, token=a).json() == {"tags": {"u.work": {"order": 0.5}}}
    assert listed({"tags": ["m.favourite"]}) == set()
    assert listed({"tags": ["u.work"]}) == {encrypted}
    r = server.request("GET", tags_path, token=bob["access_token"])
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    assert listed({"is_encrypted": False, "room_types": [None], "is_dm": False}) == {plain}
    # The DM is flagged as one.
    answer = ss(server, a, {"lists": {"l": a_list([[0, 9]])}})
    assert answer["rooms"][dm].get("is_dm") is True and "is_dm" not in answer["rooms"][plain]
    # A nameless room has heroes.
    heroes = answer["rooms"][dm]["heroes"]
    assert [h["user_id"] for h in heroes] == [bob["user_id"]]


def test_extensions(server):
    alice = server.register(unique("alice"))
    bob = server.register(unique("bob"))
    a, b = alice["access_token"], bob["access_token"]
    room = room_with(server, a, name="ext", preset="public_chat")
    assert server.request("POST", f"{CS}/rooms/{quote(room)}/join", token=b, json={}).status_code == 200
    event = send(server, b, room, "read me")
    server.request("PUT", f"{CS}/user/{quote(alice['user_id'])}/account_data/org.example.global", token=a, json={"v": 1})
    server.request("PUT", f"{CS}/user/{quote(alice['user_id'])}/rooms/{quote(room)}/account_data/org.example.room", token=a, json={"v": 1})
    server.request("POST", f"{CS}/rooms/{quote(room)}/receipt/m.read/{quote(event)}", token=b, json={})
    extensions = {
        "to_device": {"enabled": True},
        "e2ee": {"enabled": True},
        "account_data": {"enabled": True},
        "receipts": {"enabled": True, "rooms": ["*"]},
        "typing": {"enabled": True},
    }
    body = {"lists": {"l": a_list([[0, 9]])}, "extensions": extensions}
    first = ss(server, a, body)
    ext = first["extensions"]
    assert "org.example.global" in [e["type"] for e in ext["account_data"]["global"]]
    assert [e["type"] for e in ext["account_data"]["rooms"][room]] == ["org.example.room"]
    assert ext["receipts"]["rooms"][room]["content"][event]["m.read"][bob["user_id"]]["ts"] > 0
    assert ext["e2ee"]["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert "device_lists" not in ext["e2ee"], "only on incremental answers"
    assert ext["to_device"]["events"] == [] and ext["to_device"]["next_batch"]

    # To-device: delivered until acknowledged by `since`.
    whoami = server.request("GET", f"{CS}/account/whoami", token=a).json()
    r = server.request(
        "PUT",
        f"{CS}/sendToDevice/org.example.ping/{unique('t')}",
        token=b,
        json={"messages": {alice["user_id"]: {whoami["device_id"]: {"n": 1}}}},
    )
    assert r.status_code == 200
    # Bob types and changes his keys: alice hears of both.
    server.request("PUT", f"{CS}/rooms/{quote(room)}/typing/{quote(bob['user_id'])}", token=b, json={"typing": True, "timeout": 30000})
    bob_device = Device(server.url, bob["user_id"], b, bob["device_id"])
    bob_device.call("POST", "/keys/upload", json={"device_keys": bob_device.device_keys()})
    second = ss(server, a, body, pos=first["pos"], timeout=0)
    ext = second["extensions"]
    assert [m["content"] for m in ext["to_device"]["events"]] == [{"n": 1}]
    assert ext["typing"]["rooms"][room]["content"]["user_ids"] == [bob["user_id"]]
    assert "receipts" not in ext or room not in ext["receipts"]["rooms"], "no new receipts"
    assert bob["user_id"] in ext["e2ee"]["device_lists"]["changed"]
    assert second["rooms"] == {}, "extensions do not bring a room"
    # Not acknowledged: sent again; acknowledged: gone.
    extensions["to_device"]["since"] = first["extensions"]["to_device"]["next_batch"]
    again = ss(server, a, body, pos=second["pos"], timeout=0)
    assert [m["content"] for m in again["extensions"]["to_device"]["events"]] == [{"n": 1}]
    extensions["to_device"]["since"] = again["extensions"]["to_device"]["next_batch"]
    acked = ss(server, a, body, pos=again["pos"], timeout=0)
    assert acked["extensions"]["to_device"]["events"] == []
    # Scoped to a list that does not exist: no room extensions.
    extensions["typing"] = {"enabled": True, "lists": ["nope"], "rooms": []}
    scoped = ss(server, a, {"lists": {"l": a_list([[0, 9]])}, "extensions": extensions})
    assert scoped["extensions"]["typing"]["rooms"] == {}
    # A bad `since` is refused.
    extensions["to_device"]["since"] = "not a number"
    assert ss(server, a, body, status=400)["errcode"] == "M_INVALID_PARAM"


def test_bad_requests_get_matrix_errors(server):
    me = server.register(unique("alice"))["access_token"]
    r = server.request("POST", SSS, json={})
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = server.request("POST", SSS, token=me, data=b"not json")
    assert r.status_code == 400 and r.json()["errcode"] == "M_NOT_JSON"
    cases = [
        ({"lists": {"l": {"ranges": [[0, 1]], "required_state": []}}}, "M_MISSING_PARAM"),
        ({"lists": {"l": {"ranges": [[0, 1]], "timeline_limit": "ten", "required_state": []}}}, "M_BAD_JSON"),
        ({"lists": {"l": a_list([[5, 1]])}}, "M_INVALID_PARAM"),
        ({"lists": {"l": a_list([[0, 1]], limit=5000)}}, "M_INVALID_PARAM"),
        ({"lists": {f"l{i}": a_list([[0, 1]]) for i in range(101)}}, "M_INVALID_PARAM"),
        ({"lists": {"x" * 65: a_list([[0, 1]])}}, "M_INVALID_PARAM"),
        ({"lists": {"l": a_list([[0, 1]], state=[["m.room.name"]])}}, "M_BAD_JSON"),
    ]
    for body, errcode in cases:
        assert ss(server, me, body, status=400)["errcode"] == errcode, body
    r = server.request("POST", SSS, token=me, params={"timeout": "soon"}, json={})
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"
    # The widest range there is lists every room, without overflowing.
    room_with(server, me)
    widest = ss(server, me, {"lists": {"l": a_list([[0, 2**64 - 1]])}})
    assert widest["lists"]["l"]["count"] == 1 and len(widest["rooms"]) == 1
    assert ss(server, me, {"lists": {"l": a_list([[2**64 - 1, 2**64 - 1]])}})["rooms"] == {}
    # Still works after all that.
    assert "pos" in ss(server, me, {})
