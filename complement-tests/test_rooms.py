"""Rooms, first slice: create (presets, versions 10-12, alias, invites, initial
state), send with transaction ids, read state and events. Every event goes
through the state-resolution core's auth rules."""

import asyncio
from urllib.parse import quote

import nio

from conftest import unique

CS = "/_matrix/client/v3"


def create(server, token, **body):
    r = server.request("POST", f"{CS}/createRoom", token=token, json=body)
    assert r.status_code == 200, r.text
    return r.json()["room_id"]


def test_nio_creates_a_room_and_reads_its_state(server, tmp_path):
    async def scenario():
        name = unique("nio")
        client = nio.AsyncClient(server.url, store_path=str(tmp_path))
        try:
            assert isinstance(await client.register(name, "pw"), nio.RegisterResponse)
            created = await client.room_create(name="Book club", topic="Chapter 3", alias=f"club{name}", visibility=nio.RoomVisibility.public)
            assert isinstance(created, nio.RoomCreateResponse), created
            joined = await client.joined_rooms()
            assert joined.rooms == [created.room_id]
            topic = await client.room_get_state_event(created.room_id, "m.room.topic")
            assert topic.content == {"topic": "Chapter 3"}, topic
            sent = await client.room_send(created.room_id, "m.room.message", {"msgtype": "m.text", "body": "hello"})
            assert isinstance(sent, nio.RoomSendResponse), sent
            state = await client.room_get_state(created.room_id)
            kinds = {event["type"] for event in state.events}
            assert {"m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules", "m.room.name", "m.room.topic", "m.room.canonical_alias"} <= kinds
        finally:
            await client.close()

    asyncio.run(scenario())


def test_presets_versions_and_errors(server):
    token = server.register(unique())["access_token"]
    for version in ["10", "11", "12"]:
        room = create(server, token, room_version=version, preset="private_chat")
        rules = server.request("GET", f"{CS}/rooms/{quote(room)}/state/m.room.join_rules/", token=token).json()
        assert rules == {"join_rule": "invite"}
        created = server.request("GET", f"{CS}/rooms/{quote(room)}/state/m.room.create", token=token).json()
        assert created["room_version"] == version
        assert (":" in room) == (version != "12"), room
    public = create(server, token, preset="public_chat")
    assert server.request("GET", f"{CS}/rooms/{quote(public)}/state/m.room.join_rules", token=token).json() == {"join_rule": "public"}

    r = server.request("POST", f"{CS}/createRoom", token=token, json={"room_version": "9"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_UNSUPPORTED_ROOM_VERSION"
    alias = unique("alias")
    create(server, token, room_alias_name=alias)
    r = server.request("POST", f"{CS}/createRoom", token=token, json={"room_alias_name": alias})
    assert r.status_code == 400 and r.json()["errcode"] == "M_ROOM_IN_USE"
    r = server.request("POST", f"{CS}/createRoom", token=token, json={"initial_state": [{"type": "x"}]})
    assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"


def test_invites_initial_state_and_power_override(server):
    alice = server.register(unique("alice"))
    bob = server.register(unique("bob"))
    room = create(
        server,
        alice["access_token"],
        preset="trusted_private_chat",
        invite=[bob["user_id"]],
        is_direct=True,
        initial_state=[{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}],
        power_level_content_override={"events_default": 10},
    )
    get = lambda kind, key="": server.request("GET", f"{CS}/rooms/{quote(room)}/state/{kind}/{quote(key)}", token=alice["access_token"]).json()
    assert get("m.room.member", bob["user_id"]) == {"membership": "invite", "is_direct": True}
    assert get("m.room.history_visibility") == {"history_visibility": "joined"}
    levels = get("m.room.power_levels")
    assert levels["events_default"] == 10
    assert levels["users"][bob["user_id"]] == 100, "trusted_private_chat gives invitees the creator's level"
    # Bob is invited, not joined: he may not read or write yet.
    r = server.request("GET", f"{CS}/rooms/{quote(room)}/state", token=bob["access_token"])
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/send/m.room.message/1", token=bob["access_token"], json={"body": "hi"})
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    assert "not joined" in r.json()["error"]


def test_transaction_ids_make_sends_idempotent_per_device(server):
    name = unique()
    first = server.register(name)
    token = first["access_token"]
    other_device = server.login(name).json()["access_token"]
    room = create(server, token)
    path = f"{CS}/rooms/{quote(room)}/send/m.room.message/txn1"
    a = server.request("PUT", path, token=token, json={"msgtype": "m.text", "body": "once"}).json()["event_id"]
    b = server.request("PUT", path, token=token, json={"msgtype": "m.text", "body": "once"}).json()["event_id"]
    c = server.request("PUT", path, token=other_device, json={"msgtype": "m.text", "body": "once"}).json()["event_id"]
    assert a == b and a != c
    # The same id in another room, or for a redaction, is another send.
    other_room = create(server, token)
    d = server.request("PUT", f"{CS}/rooms/{quote(other_room)}/send/m.room.message/txn1", token=token,
                       json={"msgtype": "m.text", "body": "elsewhere"}).json()["event_id"]
    e = server.request("PUT", f"{CS}/rooms/{quote(room)}/redact/{quote(c)}/txn1", token=token, json={}).json()
    assert d != a and e["event_id"] not in (a, d)
    event = server.request("GET", f"{CS}/rooms/{quote(room)}/event/{quote(a)}", token=token).json()
    assert event["content"]["body"] == "once" and event["sender"] == first["user_id"]
    assert "signatures" not in event and "auth_events" not in event, "clients get the client format"
    stranger = server.register(unique())["access_token"]
    r = server.request("GET", f"{CS}/rooms/{quote(room)}/event/{quote(a)}", token=stranger)
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"


def test_power_levels_are_enforced(server):
    token = server.register(unique())["access_token"]
    room = create(server, token, power_level_content_override={"events": {"m.room.topic": 200}})
    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/state/m.room.topic/", token=token, json={"topic": "t"})
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    assert "below the required level 200" in r.json()["error"]
    assert server.request("GET", f"{CS}/rooms/{quote(room)}/state/m.room.topic", token=token).status_code == 404


def test_sent_events_survive_kill_9(make_server):
    server = make_server()
    token = server.register(unique())["access_token"]
    room = create(server, token)
    ids = []
    for i in range(5):
        r = server.request("PUT", f"{CS}/rooms/{quote(room)}/send/m.room.message/k{i}", token=token, json={"msgtype": "m.text", "body": str(i)})
        ids.append(r.json()["event_id"])
    server.kill()
    server.start()
    for i, event_id in enumerate(ids):
        event = server.request("GET", f"{CS}/rooms/{quote(room)}/event/{quote(event_id)}", token=token).json()
        assert event["content"]["body"] == str(i)
    # The room goes on from where it was.
    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/send/m.room.message/after", token=token, json={"msgtype": "m.text", "body": "after"})
    assert r.status_code == 200, r.text
