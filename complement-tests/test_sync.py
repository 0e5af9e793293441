"""GET /sync, first version: matrix-nio syncing, incremental syncs, limited
timelines continued with /messages, invites, leaves, and the long-poll."""

import asyncio
import json
import threading
import time
from urllib.parse import quote

import nio

from conftest import unique

CS = "/_matrix/client/v3"


def sync(server, token, **params):
    r = server.request("GET", f"{CS}/sync", token=token, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def send(server, token, room, body, txn=None):
    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/send/m.room.message/{txn or unique('t')}", token=token, json={"msgtype": "m.text", "body": body})
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def test_nio_syncs_rooms_and_messages(server, tmp_path):
    alice = server.register(unique("alice"))
    room = server.request("POST", f"{CS}/createRoom", token=alice["access_token"], json={"preset": "public_chat", "name": "Nio room"}).json()["room_id"]
    send(server, alice["access_token"], room, "before bob")

    async def scenario():
        bob = nio.AsyncClient(server.url, store_path=str(tmp_path))
        try:
            assert isinstance(await bob.register(unique("bob"), "pw"), nio.RegisterResponse)
            assert isinstance(await bob.join(room), nio.JoinResponse)
            first = await bob.sync(timeout=0, full_state=True)
            assert isinstance(first, nio.SyncResponse), first
            assert room in bob.rooms and bob.rooms[room].name == "Nio room"
            assert bob.rooms[room].users.keys() >= {alice["user_id"], bob.user_id}
            send(server, alice["access_token"], room, "hello bob")
            second = await bob.sync(timeout=5000, since=first.next_batch)
            bodies = [e.body for e in second.rooms.join[room].timeline.events if isinstance(e, nio.RoomMessageText)]
            assert bodies == ["hello bob"], bodies
        finally:
            await bob.close()

    asyncio.run(scenario())


def test_incremental_limited_invites_and_leaves(server):
    alice = server.register(unique("alice"))
    bob = server.register(unique("bob"))
    a, b = alice["access_token"], bob["access_token"]
    room = server.request("POST", f"{CS}/createRoom", token=a, json={"preset": "public_chat"}).json()["room_id"]
    initial = sync(server, b)
    assert initial["rooms"]["join"] == {}
    assert server.request("POST", f"{CS}/rooms/{quote(room)}/join", token=b, json={}).status_code == 200
    joined = sync(server, b, since=initial["next_batch"])
    state_types = {e["type"] for e in joined["rooms"]["join"][room]["state"]["events"] + joined["rooms"]["join"][room]["timeline"]["events"]}
    assert "m.room.create" in state_types, "a room joined since the token comes with its state"

    # 30 messages, then a sync limited to 5: limited, and prev_batch continues with /messages.
    sent = [send(server, a, room, str(i)) for i in range(30)]
    filt = json.dumps({"room": {"timeline": {"limit": 5}}})
    page = sync(server, b, since=joined["next_batch"], filter=filt)
    timeline = page["rooms"]["join"][room]["timeline"]
    assert timeline["limited"] is True
    assert [e["event_id"] for e in timeline["events"]] == sent[-5:]
    back = server.request("GET", f"{CS}/rooms/{quote(room)}/messages", token=b, params={"dir": "b", "from": timeline["prev_batch"], "limit": 25}).json()
    assert [e["event_id"] for e in back["chunk"]] == list(reversed(sent[:-5]))

    # Nothing new: an incremental sync with no timeout has an empty join section.
    quiet = sync(server, b, since=page["next_batch"], timeout=0)
    assert quiet["rooms"]["join"] == {}

    # An invite shows with its stripped state; a leave shows in `leave`.
    other = server.request("POST", f"{CS}/createRoom", token=a, json={"name": "Secret"}).json()["room_id"]
    assert server.request("POST", f"{CS}/rooms/{quote(other)}/invite", token=a, json={"user_id": bob["user_id"]}).status_code == 200
    invited = sync(server, b, since=quiet["next_batch"])
    invite_state = invited["rooms"]["invite"][other]["invite_state"]["events"]
    assert {"type": "m.room.name", "state_key": "", "sender": alice["user_id"], "content": {"name": "Secret"}} in invite_state
    assert server.request("POST", f"{CS}/rooms/{quote(room)}/leave", token=b, json={}).status_code == 200
    left = sync(server, b, since=invited["next_batch"])
    assert room in left["rooms"]["leave"]
    assert room not in left["rooms"]["join"]


def test_long_poll_wakes_for_the_user_only(server):
    alice = server.register(unique("alice"))
    carol = server.register(unique("carol"))
    a = alice["access_token"]
    room = server.request("POST", f"{CS}/createRoom", token=a, json={}).json()["room_id"]
    elsewhere = server.request("POST", f"{CS}/createRoom", token=carol["access_token"], json={}).json()["room_id"]
    since = sync(server, a)["next_batch"]

    # Other rooms' events do not end the wait.
    result = {}

    def wait(key, timeout):
        started = time.monotonic()
        result[key] = (sync(server, a, since=since, timeout=timeout), time.monotonic())
        result[key + "_took"] = time.monotonic() - started

    t = threading.Thread(target=wait, args=("quiet", 1500))
    t.start()
    time.sleep(0.3)
    send(server, carol["access_token"], elsewhere, "not for alice")
    t.join()
    assert result["quiet"][0]["rooms"]["join"] == {}
    assert result["quiet_took"] >= 1.4, "woken by another user's room"

    # A message in her room wakes her within 100 ms (the median of five,
    # so one scheduling hiccup of the test machine does not decide).
    delays = []
    for i in range(5):
        since = sync(server, a)["next_batch"]
        t = threading.Thread(target=wait, args=("woken", 30000))
        t.start()
        time.sleep(0.3)
        send(server, a, room, f"wake up {i}")
        sent_at = time.monotonic()
        t.join(timeout=10)
        response, returned_at = result["woken"]
        assert [e["content"]["body"] for e in response["rooms"]["join"][room]["timeline"]["events"]] == [f"wake up {i}"]
        delays.append(returned_at - sent_at)
    assert sorted(delays)[2] < 0.1, f"woke {sorted(delays)} s after the sends"


def test_lazy_loading_and_state_after(server):
    """`lazy_load_members` keeps member events to the timeline's senders
    (and oneself); `use_state_after` (Matrix 1.16) answers `state_after`:
    the state at the end of the timeline, including its state events."""
    users = [server.register(unique(n)) for n in ("alice", "bob", "carol", "dave")]
    alice, bob, carol, dave = users
    a = alice["access_token"]
    room = server.request("POST", f"{CS}/createRoom", token=a, json={"preset": "public_chat"}).json()["room_id"]
    for user in users[1:]:
        server.request("POST", f"{CS}/rooms/{quote(room)}/join", token=user["access_token"], json={})
    for i in range(5):
        send(server, a, room, f"filler {i}")
    send(server, carol["access_token"], room, "carol speaks")

    lazy = json.dumps({"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": True}}})
    joined = sync(server, bob["access_token"], filter=lazy)["rooms"]["join"][room]
    members = {e["state_key"] for e in joined["state"]["events"] if e["type"] == "m.room.member"}
    assert members == {carol["user_id"], bob["user_id"]}, "the sender and oneself, not Alice or Dave"
    assert any(e["type"] == "m.room.create" for e in joined["state"]["events"])
    full = sync(server, bob["access_token"], filter=json.dumps({"room": {"timeline": {"limit": 1}}}))["rooms"]["join"][room]
    assert {e["state_key"] for e in full["state"]["events"] if e["type"] == "m.room.member"} == {u["user_id"] for u in users}

    # state_after: a topic change in the timeline shows in state_after.
    first = server.request("GET", f"{CS}/sync", token=bob["access_token"], params={"use_state_after": "true"}).json()
    assert "state" not in first["rooms"]["join"][room] and "state_after" in first["rooms"]["join"][room]
    server.request("PUT", f"{CS}/rooms/{quote(room)}/state/m.room.topic", token=a, json={"topic": "after"})
    later = server.request("GET", f"{CS}/sync", token=bob["access_token"], params={"use_state_after": "true", "since": first["next_batch"]}).json()
    after = later["rooms"]["join"][room]["state_after"]["events"]
    assert [e["content"] for e in after if e["type"] == "m.room.topic"] == [{"topic": "after"}]
    # Without it, the topic is only in the timeline.
    plain = sync(server, bob["access_token"], since=first["next_batch"])["rooms"]["join"][room]
    assert plain["state"]["events"] == []
    assert any(e["type"] == "m.room.topic" for e in plain["timeline"]["events"])


def test_leave_section_carries_the_timeline_up_to_the_kick(server):
    """A user kicked since their token gets the messages sent before the
    kick, then the kick, in the leave section; nothing after it."""
    alice, bob = server.register(unique("alice")), server.register(unique("bob"))
    a, b = alice["access_token"], bob["access_token"]
    room = server.request("POST", f"{CS}/createRoom", token=a, json={"preset": "public_chat"}).json()["room_id"]
    server.request("POST", f"{CS}/rooms/{quote(room)}/join", token=b, json={})
    token = sync(server, b)["next_batch"]
    before = [send(server, a, room, f"last words {i}") for i in range(3)]
    server.request("POST", f"{CS}/rooms/{quote(room)}/kick", token=a, json={"user_id": bob["user_id"], "reason": "bye"})
    send(server, a, room, "after the kick")
    left = sync(server, b, since=token)["rooms"]["leave"][room]
    events = left["timeline"]["events"]
    assert [e["event_id"] for e in events[:3]] == before
    assert events[-1]["type"] == "m.room.member" and events[-1]["content"]["membership"] == "leave"
    assert "after the kick" not in [e["content"].get("body") for e in events]
