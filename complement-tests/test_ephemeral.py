"""Typing, receipts, read markers, unread counts, presence and account data
in sync: the streams that share the sync token with events."""

import json
import threading
import time
from urllib.parse import quote

from conftest import unique
from test_sync import send, sync

CS = "/_matrix/client/v3"


def two_in_a_room(server):
    alice = server.register(unique("alice"))
    bob = server.register(unique("bob"))
    a, b = alice["access_token"], bob["access_token"]
    room = server.request("POST", f"{CS}/createRoom", token=a, json={"preset": "public_chat"}).json()["room_id"]
    assert server.request("POST", f"{CS}/rooms/{quote(room)}/join", token=b, json={}).status_code == 200
    return alice, bob, room


def ephemeral(response, room, kind):
    events = response["rooms"]["join"].get(room, {}).get("ephemeral", {}).get("events", [])
    return [e for e in events if e["type"] == kind]


def test_typing_shows_stops_and_times_out(server):
    alice, bob, room = two_in_a_room(server)
    a, b = alice["access_token"], bob["access_token"]
    start = sync(server, b)["next_batch"]

    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/typing/{quote(alice['user_id'])}", token=a, json={"typing": True, "timeout": 30000})
    assert r.status_code == 200, r.text
    typing = sync(server, b, since=start)
    assert ephemeral(typing, room, "m.typing") == [{"type": "m.typing", "content": {"user_ids": [alice["user_id"]]}}]
    # A fresh initial sync shows who types now.
    assert ephemeral(sync(server, b), room, "m.typing")[0]["content"]["user_ids"] == [alice["user_id"]]

    server.request("PUT", f"{CS}/rooms/{quote(room)}/typing/{quote(alice['user_id'])}", token=a, json={"typing": False})
    stopped = sync(server, b, since=typing["next_batch"])
    assert ephemeral(stopped, room, "m.typing")[0]["content"]["user_ids"] == []

    # A stop before the timeout: the old timer firing later changes nothing.
    server.request("PUT", f"{CS}/rooms/{quote(room)}/typing/{quote(alice['user_id'])}", token=a, json={"typing": True, "timeout": 300})
    server.request("PUT", f"{CS}/rooms/{quote(room)}/typing/{quote(alice['user_id'])}", token=a, json={"typing": False})
    time.sleep(0.5)
    assert ephemeral(sync(server, b, since=stopped["next_batch"]), room, "m.typing")[0]["content"]["user_ids"] == []
    stopped = sync(server, b, since=stopped["next_batch"])

    # A short timeout ends by itself and wakes a waiting sync.
    server.request("PUT", f"{CS}/rooms/{quote(room)}/typing/{quote(alice['user_id'])}", token=a, json={"typing": True, "timeout": 500})
    began = sync(server, b, since=stopped["next_batch"])
    assert ephemeral(began, room, "m.typing")[0]["content"]["user_ids"] == [alice["user_id"]]
    t0 = time.monotonic()
    ended = sync(server, b, since=began["next_batch"], timeout=10000)
    assert time.monotonic() - t0 < 5
    assert ephemeral(ended, room, "m.typing")[0]["content"]["user_ids"] == []

    # Nobody types for someone else, nor in a room they are not in.
    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/typing/{quote(bob['user_id'])}", token=a, json={"typing": True, "timeout": 1000})
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    other = server.request("POST", f"{CS}/createRoom", token=a, json={}).json()["room_id"]
    r = server.request("PUT", f"{CS}/rooms/{quote(other)}/typing/{quote(bob['user_id'])}", token=b, json={"typing": True, "timeout": 1000})
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/typing/{quote(alice['user_id'])}", token=a, json={"typing": True})
    assert r.status_code == 400, "typing: true needs a timeout"


def test_receipts_private_receipts_and_unread_counts(server):
    alice, bob, room = two_in_a_room(server)
    a, b = alice["access_token"], bob["access_token"]
    start = sync(server, a)
    assert start["rooms"]["join"][room]["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}

    events = [send(server, b, room, f"hello {i}") for i in range(3)]
    # Mentions are `m.mentions` (the body-matching rules left the spec in v1.17).
    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/send/m.room.message/{unique('t')}", token=b, json={"msgtype": "m.text", "body": "hey Alice, look", "m.mentions": {"user_ids": [alice["user_id"]]}})
    mention = r.json()["event_id"]
    counts = sync(server, a, since=start["next_batch"])["rooms"]["join"][room]["unread_notifications"]
    assert counts == {"notification_count": 4, "highlight_count": 1}
    # The sender's own messages never count for them.
    assert sync(server, b)["rooms"]["join"][room]["unread_notifications"]["notification_count"] == 0

    before = sync(server, b)["next_batch"]
    r = server.request("POST", f"{CS}/rooms/{quote(room)}/receipt/m.read/{quote(events[1])}", token=a, json={})
    assert r.status_code == 200, r.text
    after = sync(server, a)["rooms"]["join"][room]["unread_notifications"]
    assert after == {"notification_count": 2, "highlight_count": 1}
    seen = sync(server, b, since=before)
    receipts = ephemeral(seen, room, "m.receipt")
    assert receipts and alice["user_id"] in receipts[0]["content"][events[1]]["m.read"]

    # A receipt never moves back.
    server.request("POST", f"{CS}/rooms/{quote(room)}/receipt/m.read/{quote(events[0])}", token=a, json={})
    assert sync(server, a)["rooms"]["join"][room]["unread_notifications"]["notification_count"] == 2

    # Private receipts count for oneself but others never see them.
    server.request("POST", f"{CS}/rooms/{quote(room)}/receipt/m.read.private/{quote(mention)}", token=a, json={})
    assert sync(server, a)["rooms"]["join"][room]["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}
    for receipt in ephemeral(sync(server, b, since=seen["next_batch"]), room, "m.receipt") + ephemeral(sync(server, b), room, "m.receipt"):
        assert "m.read.private" not in json.dumps(receipt)
    mine = ephemeral(sync(server, a), room, "m.receipt")
    assert "m.read.private" in json.dumps(mine)

    # Bad receipts: unknown event, unknown type, event of another room.
    r = server.request("POST", f"{CS}/rooms/{quote(room)}/receipt/m.read/{quote('$nope')}", token=a, json={})
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    r = server.request("POST", f"{CS}/rooms/{quote(room)}/receipt/m.fully_read/{quote(mention)}", token=a, json={"thread_id": "main"})
    assert r.status_code == 400
    other = server.request("POST", f"{CS}/createRoom", token=b, json={}).json()["room_id"]
    foreign = send(server, b, other, "elsewhere")
    r = server.request("POST", f"{CS}/rooms/{quote(room)}/receipt/m.read/{quote(foreign)}", token=b, json={})
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")


def test_threaded_receipts_and_thread_counts(server):
    alice, bob, room = two_in_a_room(server)
    a, b = alice["access_token"], bob["access_token"]
    root = send(server, b, room, "root")
    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/send/m.room.message/{unique('t')}", token=b, json={"msgtype": "m.text", "body": "in thread", "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
    reply = r.json()["event_id"]
    threaded = json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}})
    joined = sync(server, a, filter=threaded)["rooms"]["join"][room]
    assert joined["unread_notifications"]["notification_count"] == 1
    assert joined["unread_thread_notifications"] == {root: {"notification_count": 1, "highlight_count": 0}}
    # Without the filter flag, the thread counts with the room.
    assert sync(server, a)["rooms"]["join"][room]["unread_notifications"]["notification_count"] == 2

    server.request("POST", f"{CS}/rooms/{quote(room)}/receipt/m.read/{quote(reply)}", token=a, json={"thread_id": root})
    joined = sync(server, a, filter=threaded)["rooms"]["join"][room]
    assert joined["unread_thread_notifications"] == {}
    assert joined["unread_notifications"]["notification_count"] == 1
    server.request("POST", f"{CS}/rooms/{quote(room)}/receipt/m.read/{quote(root)}", token=a, json={"thread_id": "main"})
    assert sync(server, a)["rooms"]["join"][room]["unread_notifications"]["notification_count"] == 0
    # A threaded receipt must name the thread its event is in.
    r = server.request("POST", f"{CS}/rooms/{quote(room)}/receipt/m.read/{quote(reply)}", token=a, json={"thread_id": "main"})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM")
    r = server.request("POST", f"{CS}/rooms/{quote(room)}/receipt/m.read/{quote(root)}", token=a, json={"thread_id": reply})
    assert r.status_code == 400


def test_read_markers_and_room_account_data_in_sync(server):
    alice, bob, room = two_in_a_room(server)
    a, b = alice["access_token"], bob["access_token"]
    event = send(server, b, room, "read me")
    start = sync(server, a)
    r = server.request("POST", f"{CS}/rooms/{quote(room)}/read_markers", token=a, json={"m.fully_read": event, "m.read": event})
    assert r.status_code == 200, r.text
    changed = sync(server, a, since=start["next_batch"])["rooms"]["join"][room]
    assert {"type": "m.fully_read", "content": {"event_id": event}} in changed["account_data"]["events"]
    assert alice["user_id"] in ephemeral({"rooms": {"join": {room: changed}}}, room, "m.receipt")[0]["content"][event]["m.read"]
    assert changed["unread_notifications"]["notification_count"] == 0
    r = server.request("GET", f"{CS}/user/{quote(alice['user_id'])}/rooms/{quote(room)}/account_data/m.fully_read", token=a)
    assert r.json() == {"event_id": event}

    # Room and global account data set by the client show once, incrementally.
    mark = sync(server, a)["next_batch"]
    server.request("PUT", f"{CS}/user/{quote(alice['user_id'])}/rooms/{quote(room)}/account_data/org.example.tag", token=a, json={"x": 1})
    server.request("PUT", f"{CS}/user/{quote(alice['user_id'])}/account_data/org.example.global", token=a, json={"y": 2})
    news = sync(server, a, since=mark)
    assert news["rooms"]["join"][room]["account_data"]["events"] == [{"type": "org.example.tag", "content": {"x": 1}}]
    assert news["account_data"]["events"] == [{"type": "org.example.global", "content": {"y": 2}}]
    quiet = sync(server, a, since=news["next_batch"])
    assert quiet["rooms"]["join"] == {} and quiet["account_data"]["events"] == []
    # A first sync carries the room's account data.
    first = sync(server, a)["rooms"]["join"][room]["account_data"]["events"]
    assert {"type": "org.example.tag", "content": {"x": 1}} in first


def test_presence_set_get_and_in_sync(server):
    alice, bob, room = two_in_a_room(server)
    a, b = alice["access_token"], bob["access_token"]
    stranger = server.register(unique("carol"))
    start = sync(server, b)["next_batch"]

    waiting = {}

    def wait():
        waiting["response"] = sync(server, b, since=start, timeout=10000)

    poll = threading.Thread(target=wait)
    poll.start()
    time.sleep(0.3)
    r = server.request("PUT", f"{CS}/presence/{quote(alice['user_id'])}/status", token=a, json={"presence": "online", "status_msg": "here"})
    assert r.status_code == 200, r.text
    poll.join()
    events = [e for e in waiting["response"]["presence"]["events"] if e["sender"] == alice["user_id"]]
    assert events and events[0]["content"]["presence"] == "online" and events[0]["content"]["status_msg"] == "here"

    got = server.request("GET", f"{CS}/presence/{quote(alice['user_id'])}/status", token=b).json()
    assert got["presence"] == "online" and got["status_msg"] == "here" and got["currently_active"] is True
    # Strangers who share no room cannot look; nobody sets another's presence.
    r = server.request("GET", f"{CS}/presence/{quote(alice['user_id'])}/status", token=stranger["access_token"])
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    r = server.request("PUT", f"{CS}/presence/{quote(alice['user_id'])}/status", token=b, json={"presence": "offline"})
    assert r.status_code == 403
    r = server.request("PUT", f"{CS}/presence/{quote(alice['user_id'])}/status", token=a, json={"presence": "dancing"})
    assert r.status_code == 400
    # The stranger's own sync never shows Alice's presence.
    assert all(e["sender"] != alice["user_id"] for e in sync(server, stranger["access_token"])["presence"]["events"])

    # set_presence on sync raises presence but never lowers it (two devices
    # syncing with different states must not flip it); offline leaves it.
    def presence():
        return server.request("GET", f"{CS}/presence/{quote(alice['user_id'])}/status", token=b).json()["presence"]

    server.request("PUT", f"{CS}/presence/{quote(alice['user_id'])}/status", token=a, json={"presence": "offline"})
    sync(server, a, set_presence="unavailable")
    assert presence() == "unavailable"
    sync(server, a, set_presence="online")
    assert presence() == "online"
    sync(server, a, set_presence="unavailable")
    sync(server, a, set_presence="offline")
    assert presence() == "online"
