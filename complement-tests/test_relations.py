"""Relations, threads and /context: reactions and thread replies as
Element sends them, the relations endpoints, the thread list, the bundled
thread summary, and the events around an event."""

import json
from urllib.parse import quote

from conftest import unique
from test_ephemeral import two_in_a_room
from test_sync import send, sync

CS = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"


def send_event(server, token, room, kind, content):
    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/send/{kind}/{unique('t')}", token=token, json=content)
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def reply_in_thread(server, token, room, root, body):
    return send_event(server, token, room, "m.room.message", {"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": True, "m.in_reply_to": {"event_id": root}}})


def test_reactions_threads_and_relations_endpoints(server):
    alice, bob, room = two_in_a_room(server)
    a, b = alice["access_token"], bob["access_token"]
    root = send(server, a, room, "thread root")
    reaction = send_event(server, b, room, "m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}})
    replies = [reply_in_thread(server, b if i % 2 else a, room, root, f"reply {i}") for i in range(5)]

    everything = server.request("GET", f"{V1}/rooms/{quote(room)}/relations/{quote(root)}", token=a).json()
    assert [e["event_id"] for e in everything["chunk"]] == list(reversed([reaction] + replies)), "newest first"
    threads_only = server.request("GET", f"{V1}/rooms/{quote(room)}/relations/{quote(root)}/m.thread", token=a).json()
    assert [e["event_id"] for e in threads_only["chunk"]] == list(reversed(replies))
    reactions = server.request("GET", f"{V1}/rooms/{quote(room)}/relations/{quote(root)}/m.annotation/m.reaction", token=b).json()
    assert [e["event_id"] for e in reactions["chunk"]] == [reaction]

    # Paging: two at a time, forward, follows next_batch to the end.
    seen, token = [], None
    while True:
        params = {"limit": 2, "dir": "f", **({"from": token} if token else {})}
        page = server.request("GET", f"{V1}/rooms/{quote(room)}/relations/{quote(root)}/m.thread", token=a, params=params).json()
        seen += [e["event_id"] for e in page["chunk"]]
        token = page.get("next_batch")
        if not token:
            break
    assert seen == replies

    # The root carries the thread summary wherever it is served.
    event = server.request("GET", f"{CS}/rooms/{quote(room)}/event/{quote(root)}", token=a).json()
    summary = event["unsigned"]["m.relations"]["m.thread"]
    assert summary["count"] == 5 and summary["latest_event"]["event_id"] == replies[-1]
    assert summary["current_user_participated"] is True
    timeline = sync(server, b)["rooms"]["join"][room]["timeline"]["events"]
    assert any(e["event_id"] == root and e["unsigned"]["m.relations"]["m.thread"]["count"] == 5 for e in timeline)

    # The thread list, latest activity first; "participated" for Carol is empty.
    other_root = send(server, b, room, "second thread")
    reply_in_thread(server, b, room, other_root, "only reply")
    listed = server.request("GET", f"{V1}/rooms/{quote(room)}/threads", token=a).json()
    assert [e["event_id"] for e in listed["chunk"]] == [other_root, root]
    first = server.request("GET", f"{V1}/rooms/{quote(room)}/threads", token=a, params={"limit": 1}).json()
    assert [e["event_id"] for e in first["chunk"]] == [other_root]
    rest = server.request("GET", f"{V1}/rooms/{quote(room)}/threads", token=a, params={"limit": 1, "from": first["next_batch"]}).json()
    assert [e["event_id"] for e in rest["chunk"]] == [root] and "next_batch" not in rest
    mine = server.request("GET", f"{V1}/rooms/{quote(room)}/threads", token=a, params={"include": "participated"}).json()
    assert [e["event_id"] for e in mine["chunk"]] == [root], "Alice wrote only in the first thread"

    # A redacted reaction is no longer a relation.
    server.request("PUT", f"{CS}/rooms/{quote(room)}/redact/{quote(reaction)}/{unique('r')}", token=b, json={})
    reactions = server.request("GET", f"{V1}/rooms/{quote(room)}/relations/{quote(root)}/m.annotation", token=b).json()
    assert reactions["chunk"] == []
    # A second identical reaction is refused, unless the first was redacted.
    again = send_event(server, b, room, "m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}})
    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/send/m.reaction/{unique('t')}", token=b, json={"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_DUPLICATE_ANNOTATION")
    assert again

    # Outsiders and unknown events.
    carol = server.register(unique("carol"))
    r = server.request("GET", f"{V1}/rooms/{quote(room)}/relations/{quote(root)}", token=carol["access_token"])
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    r = server.request("GET", f"{V1}/rooms/{quote(room)}/relations/{quote('$missing')}", token=a)
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")


def test_context_around_an_event(server):
    alice, bob, room = two_in_a_room(server)
    a, b = alice["access_token"], bob["access_token"]
    sent = [send(server, a if i % 2 else b, room, f"m{i}") for i in range(11)]
    middle = sent[5]
    ctx = server.request("GET", f"{CS}/rooms/{quote(room)}/context/{quote(middle)}", token=a, params={"limit": 6}).json()
    assert ctx["event"]["event_id"] == middle
    assert [e["event_id"] for e in ctx["events_before"]] == [sent[4], sent[3], sent[2]]
    assert [e["event_id"] for e in ctx["events_after"]] == [sent[6], sent[7], sent[8]]
    assert {e["type"] for e in ctx["state"]} >= {"m.room.create", "m.room.member", "m.room.power_levels"}
    # The tokens continue with /messages in each direction.
    back = server.request("GET", f"{CS}/rooms/{quote(room)}/messages", token=a, params={"dir": "b", "from": ctx["start"], "limit": 2}).json()
    assert [e["event_id"] for e in back["chunk"]] == [sent[1], sent[0]]
    forward = server.request("GET", f"{CS}/rooms/{quote(room)}/messages", token=a, params={"dir": "f", "from": ctx["end"], "limit": 5}).json()
    assert [e["event_id"] for e in forward["chunk"]] == [sent[9], sent[10]]

    # Lazy loading keeps only the senders' member events.
    carol = server.register(unique("carol"))
    server.request("POST", f"{CS}/rooms/{quote(room)}/join", token=carol["access_token"], json={})
    lazy = json.dumps({"lazy_load_members": True})
    ctx = server.request("GET", f"{CS}/rooms/{quote(room)}/context/{quote(sent[9])}", token=a, params={"limit": 2, "filter": lazy}).json()
    members = {e["state_key"] for e in ctx["state"] if e["type"] == "m.room.member"}
    assert members == {alice["user_id"], bob["user_id"]}

    # At the live end, the end token continues without repeating anything.
    last = server.request("GET", f"{CS}/rooms/{quote(room)}/context/{quote(sent[10])}", token=a, params={"limit": 4}).json()
    onward = server.request("GET", f"{CS}/rooms/{quote(room)}/messages", token=a, params={"dir": "f", "from": last["end"]}).json()
    assert not set(e["event_id"] for e in onward["chunk"]) & set(sent)

    r = server.request("GET", f"{CS}/rooms/{quote(room)}/context/{quote('$nope')}", token=a)
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    stranger = server.register(unique("dave"))
    r = server.request("GET", f"{CS}/rooms/{quote(room)}/context/{quote(middle)}", token=stranger["access_token"])
    assert r.status_code == 403
