"""GET /messages: 200 messages paginated back and forth, filters, bounds."""

from urllib.parse import quote

from conftest import unique

CS = "/_matrix/client/v3"


def test_paginate_200_messages_both_ways(server):
    alice = server.register(unique("alice"))
    bob = server.register(unique("bob"))
    token = alice["access_token"]
    room = server.request("POST", f"{CS}/createRoom", token=token, json={"preset": "public_chat"}).json()["room_id"]
    assert server.request("POST", f"{CS}/rooms/{quote(room)}/join", token=bob["access_token"], json={}).status_code == 200
    for i in range(200):
        sender = token if i % 2 == 0 else bob["access_token"]
        r = server.request("PUT", f"{CS}/rooms/{quote(room)}/send/m.room.message/m{i}", token=sender, json={"msgtype": "m.text", "body": str(i)})
        assert r.status_code == 200, r.text
    path = f"{CS}/rooms/{quote(room)}/messages"

    # Backwards from the end, 50 at a time, until `end` is gone.
    bodies, token_from, pages = [], None, 0
    while True:
        params = {"dir": "b", "limit": 50, "filter": '{"types": ["m.room.message"]}'}
        if token_from:
            params["from"] = token_from
        page = server.request("GET", path, token=token, params=params).json()
        pages += 1
        bodies += [e["content"]["body"] for e in page["chunk"]]
        if "end" not in page:
            break
        token_from = page["end"]
    assert bodies == [str(i) for i in reversed(range(200))]
    assert pages in (4, 5)

    # Forwards from the start: the room's creation, then the messages in order.
    forward = server.request("GET", path, token=token, params={"dir": "f", "limit": 1000}).json()
    kinds = [e["type"] for e in forward["chunk"]]
    assert kinds[0] == "m.room.create" and "end" not in forward
    messages = [e["content"]["body"] for e in forward["chunk"] if e["type"] == "m.room.message"]
    assert messages == [str(i) for i in range(200)]

    # A filter that skips events must not end paging early: forward pages of
    # 150 messages (the last read is a short page that fills this one), with
    # the room's state events filtered out.
    collected, params = [], {"dir": "f", "limit": 150, "filter": '{"types": ["m.room.message"]}'}
    while True:
        page = server.request("GET", path, token=token, params=params).json()
        collected += [e["content"]["body"] for e in page["chunk"]]
        if "end" not in page:
            break
        params["from"] = page["end"]
    assert collected == [str(i) for i in range(200)]

    # Filters: senders, not_types; and `to` stops a page.
    only_bob = server.request("GET", path, token=token, params={"dir": "b", "limit": 10, "filter": f'{{"senders": ["{bob["user_id"]}"]}}'}).json()
    assert {e["sender"] for e in only_bob["chunk"]} == {bob["user_id"]} and len(only_bob["chunk"]) == 10
    first = server.request("GET", path, token=token, params={"dir": "b", "limit": 5}).json()
    second = server.request("GET", path, token=token, params={"dir": "b", "limit": 5, "from": first["end"]}).json()
    bounded = server.request("GET", path, token=token, params={"dir": "f", "from": second["end"], "to": first["end"], "limit": 100}).json()
    assert [e["event_id"] for e in bounded["chunk"]] == [e["event_id"] for e in reversed(second["chunk"])]
    no_state = server.request("GET", path, token=token, params={"dir": "f", "limit": 1000, "filter": '{"not_types": ["m.room.*"]}'}).json()
    assert no_state["chunk"] == []


def test_messages_errors(server):
    alice = server.register(unique("alice"))
    stranger = server.register(unique("stranger"))
    room = server.request("POST", f"{CS}/createRoom", token=alice["access_token"], json={}).json()["room_id"]
    path = f"{CS}/rooms/{quote(room)}/messages"
    r = server.request("GET", path, token=stranger["access_token"], params={"dir": "b"})
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = server.request("GET", path, token=alice["access_token"], params={"dir": "b", "from": "not-a-token"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"
    r = server.request("GET", path, token=alice["access_token"], params={"dir": "sideways"})
    assert r.status_code == 400
