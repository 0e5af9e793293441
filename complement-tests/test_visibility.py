"""History visibility (`m.room.history_visibility`) on /messages, /event,
/context and sync: former members read up to their leave, `joined` hides
what came before a join, `invited` shows from the invite, and
`world_readable` rooms are readable by anyone."""

from urllib.parse import quote

from conftest import unique
from test_sync import send, sync

CS = "/_matrix/client/v3"


def messages(server, token, room, **params):
    return server.request("GET", f"{CS}/rooms/{quote(room)}/messages", token=token, params={"dir": "b", "limit": 50, **params})


def bodies(response):
    assert response.status_code == 200, response.text
    return [e["content"].get("body") for e in response.json()["chunk"] if e["type"] == "m.room.message"]


def set_visibility(server, token, room, value):
    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/state/m.room.history_visibility", token=token, json={"history_visibility": value})
    assert r.status_code == 200, r.text


def join(server, token, room):
    r = server.request("POST", f"{CS}/rooms/{quote(room)}/join", token=token, json={})
    assert r.status_code == 200, r.text


def test_former_member_reads_up_to_the_leave(server):
    alice, bob = server.register(unique("alice")), server.register(unique("bob"))
    a, b = alice["access_token"], bob["access_token"]
    room = server.request("POST", f"{CS}/createRoom", token=a, json={"preset": "public_chat"}).json()["room_id"]
    join(server, b, room)
    send(server, a, room, "while bob is here")
    server.request("POST", f"{CS}/rooms/{quote(room)}/leave", token=b, json={})
    secret = send(server, a, room, "after bob left")
    assert bodies(messages(server, b, room)) == ["while bob is here"]
    r = server.request("GET", f"{CS}/rooms/{quote(room)}/event/{quote(secret)}", token=b)
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    r = server.request("GET", f"{CS}/rooms/{quote(room)}/context/{quote(secret)}", token=b)
    assert r.status_code == 404
    # Forgetting the room ends even that.
    server.request("POST", f"{CS}/rooms/{quote(room)}/forget", token=b, json={})
    assert messages(server, b, room).status_code == 403


def test_joined_and_invited_visibility(server):
    alice, bob, carol = (server.register(unique(n)) for n in ("alice", "bob", "carol"))
    a, b, c = alice["access_token"], bob["access_token"], carol["access_token"]
    room = server.request("POST", f"{CS}/createRoom", token=a, json={"preset": "public_chat"}).json()["room_id"]
    set_visibility(server, a, room, "joined")
    send(server, a, room, "before anyone")
    join(server, b, room)
    send(server, a, room, "after bob joined")
    assert bodies(messages(server, b, room)) == ["after bob joined"]
    # A first sync shows no event from before the join either.
    timeline = sync(server, b)["rooms"]["join"][room]["timeline"]["events"]
    assert "before anyone" not in [e["content"].get("body") for e in timeline]

    set_visibility(server, a, room, "invited")
    server.request("POST", f"{CS}/rooms/{quote(room)}/invite", token=a, json={"user_id": carol["user_id"]})
    send(server, a, room, "after carol was invited")
    join(server, c, room)
    assert bodies(messages(server, c, room)) == ["after carol was invited"]


def test_world_readable_rooms_and_strangers(server):
    alice, stranger = server.register(unique("alice")), server.register(unique("eve"))
    a, e = alice["access_token"], stranger["access_token"]
    room = server.request("POST", f"{CS}/createRoom", token=a, json={"preset": "public_chat"}).json()["room_id"]
    first = send(server, a, room, "hello world")
    r = messages(server, e, room)
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    assert server.request("GET", f"{CS}/rooms/{quote(room)}/event/{quote(first)}", token=e).status_code == 404
    # Visibility is that in force at each event: only what follows the
    # change is world-readable.
    set_visibility(server, a, room, "world_readable")
    later = send(server, a, room, "for everyone")
    assert bodies(messages(server, e, room)) == ["for everyone"]
    assert server.request("GET", f"{CS}/rooms/{quote(room)}/event/{quote(later)}", token=e).status_code == 200
    assert server.request("GET", f"{CS}/rooms/{quote(room)}/event/{quote(first)}", token=e).status_code == 404
