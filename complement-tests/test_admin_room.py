"""The admin room: the first admin is joined to it with the server's bot,
`!admin ...` commands from admins are answered by the bot, everyone
else's are refused, and the bot's name cannot be registered."""

import time
from urllib.parse import quote

from conftest import unique
from test_registration_tokens import admin, register_with_token, valid  # noqa: F401 (fixture)

CS = "/_matrix/client/v3"


def send(server, token, room, body):
    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/send/m.room.message/{unique('t')}", token=token, json={"msgtype": "m.text", "body": body})
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def bot_answer(server, token, room, to_event):
    """The bot's notice replying to an event."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        chunk = server.request("GET", f"{CS}/rooms/{quote(room)}/messages", token=token, params={"dir": "b", "limit": 20}).json()["chunk"]
        for event in chunk:
            relates = event["content"].get("m.relates_to", {}).get("m.in_reply_to", {})
            if relates.get("event_id") == to_event:
                assert event["sender"] == "@conduit:localhost" and event["content"]["msgtype"] == "m.notice"
                return event["content"]["body"]
        time.sleep(0.1)
    raise AssertionError("the bot did not answer")


def test_admin_room_commands(admin):
    server, boss = admin
    rooms = server.request("GET", f"{CS}/joined_rooms", token=boss).json()["joined_rooms"]
    assert len(rooms) == 1, "the first admin is joined to the admin room"
    room = rooms[0]
    name = server.request("GET", f"{CS}/rooms/{quote(room)}/state/m.room.name", token=boss).json()["name"]
    assert name == "Server admins"
    members = server.request("GET", f"{CS}/rooms/{quote(room)}/joined_members", token=boss).json()["joined"]
    assert set(members) == {"@boss:localhost", "@conduit:localhost"}

    asked = send(server, boss, room, '!admin token create --uses 1 --note "for Ann"')
    answer = bot_answer(server, boss, room, asked)
    token = answer.split()[0]
    assert "0/1 used" in answer and "for Ann" in answer and "by @boss:localhost" in answer
    assert valid(server, token)
    assert token in bot_answer(server, boss, room, send(server, boss, room, "!admin token list"))
    assert "revoked" in bot_answer(server, boss, room, send(server, boss, room, f"!admin token revoke {token}"))
    assert not valid(server, token)
    assert "No such registration token" in bot_answer(server, boss, room, send(server, boss, room, "!admin token show nope"))
    assert "unrecognized subcommand 'frobnicate'" in bot_answer(server, boss, room, send(server, boss, room, "!admin frobnicate"))
    invite = bot_answer(server, boss, room, send(server, boss, room, "!admin invite"))
    assert "Invite token for localhost" in invite

    # A retried transaction runs its command once.
    txn = unique("t")
    path = f"{CS}/rooms/{quote(room)}/send/m.room.message/{txn}"
    first = server.request("PUT", path, token=boss, json={"msgtype": "m.text", "body": "!admin token list"}).json()["event_id"]
    again = server.request("PUT", path, token=boss, json={"msgtype": "m.text", "body": "!admin token list"}).json()["event_id"]
    assert first == again
    bot_answer(server, boss, room, first)
    chunk = server.request("GET", f"{CS}/rooms/{quote(room)}/messages", token=boss, params={"dir": "b", "limit": 10}).json()["chunk"]
    replies = [e for e in chunk if e["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id") == first]
    assert len(replies) == 1

    # Ordinary messages get no answer; commands elsewhere are not commands.
    plain = send(server, boss, room, "hello bot")
    time.sleep(0.3)
    chunk = server.request("GET", f"{CS}/rooms/{quote(room)}/messages", token=boss, params={"dir": "b", "limit": 5}).json()["chunk"]
    assert chunk[0]["event_id"] == plain
    other = server.request("POST", f"{CS}/createRoom", token=boss, json={}).json()["room_id"]
    elsewhere = send(server, boss, other, "!admin invite")
    time.sleep(0.3)
    chunk = server.request("GET", f"{CS}/rooms/{quote(other)}/messages", token=boss, params={"dir": "b", "limit": 5}).json()["chunk"]
    assert chunk[0]["event_id"] == elsewhere


def test_non_admins_in_the_admin_room_and_the_bot_name(admin):
    server, boss = admin
    room = server.request("GET", f"{CS}/joined_rooms", token=boss).json()["joined_rooms"][0]
    token = bot_answer(server, boss, room, send(server, boss, room, "!admin token create --uses 2")).split()[0]
    user = register_with_token(server, token).json()
    # An admin invites a non-admin; their commands are refused.
    server.request("POST", f"{CS}/rooms/{quote(room)}/invite", token=boss, json={"user_id": user["user_id"]})
    assert server.request("POST", f"{CS}/rooms/{quote(room)}/join", token=user["access_token"], json={}).status_code == 200
    answer = bot_answer(server, user["access_token"], room, send(server, user["access_token"], room, "!admin invite"))
    assert answer == "Only server admins may run admin commands."
    # Nobody registers as the bot.
    r = server.request("GET", f"{CS}/register/available", params={"username": "conduit"})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_USER_IN_USE")
    r = server.request("POST", f"{CS}/register", json={"username": "conduit", "password": "pw"})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_USER_IN_USE")


def test_appservices_registered_from_the_admin_room(admin):
    server, boss = admin
    room = server.request("GET", f"{CS}/joined_rooms", token=boss).json()["joined_rooms"][0]
    registration = (
        "id: roombot\nurl: null\nas_token: roombot-as-token\nhs_token: roombot-hs-token\n"
        "sender_localpart: roombot\nnamespaces:\n  users:\n    - exclusive: true\n      regex: \"@roombot_.*:localhost\"\n"
    )
    asked = send(server, boss, room, f"!admin appservice register\n```yaml\n{registration}```")
    assert "@roombot:localhost" in bot_answer(server, boss, room, asked)
    whoami = server.request("GET", f"{CS}/account/whoami", token="roombot-as-token").json()
    assert whoami["user_id"] == "@roombot:localhost"
    listed = bot_answer(server, boss, room, send(server, boss, room, "!admin appservice list"))
    assert "roombot: @roombot:localhost, no url, registered by command" in listed
    broken = bot_answer(server, boss, room, send(server, boss, room, "!admin appservice register\nid: [unclosed"))
    assert broken.startswith("Error:")
    gone = bot_answer(server, boss, room, send(server, boss, room, "!admin appservice unregister roombot"))
    assert "Unregistered" in gone
    assert server.request("GET", f"{CS}/account/whoami", token="roombot-as-token").status_code == 401
