"""Membership between two local users: join (by id and alias), invite,
leave, kick, ban, unban, forget, members; each refusal is the auth rules'."""

from urllib.parse import quote

from conftest import unique

CS = "/_matrix/client/v3"


def post(server, token, path, body=None):
    return server.request("POST", f"{CS}{path}", token=token, json=body or {})


def forbidden(r, words):
    assert r.status_code == 403, r.text
    assert r.json()["errcode"] == "M_FORBIDDEN"
    assert words in r.json()["error"], r.json()["error"]


def setup(server, preset):
    alice = server.register(unique("alice"))
    bob = server.register(unique("bob"))
    alias = unique("room")
    r = post(server, alice["access_token"], "/createRoom", {"preset": preset, "room_alias_name": alias, "name": "Club"})
    assert r.status_code == 200, r.text
    return alice, bob, r.json()["room_id"], f"#{alias}:{server.server_name}"


def members(server, token, room, **params):
    r = server.request("GET", f"{CS}/rooms/{quote(room)}/members", token=token, params=params)
    assert r.status_code == 200, r.text
    return {e["state_key"]: e["content"]["membership"] for e in r.json()["chunk"]}


def test_public_room_join_by_alias_leave_and_forget(server):
    alice, bob, room, alias = setup(server, "public_chat")
    r = post(server, bob["access_token"], f"/join/{quote(alias)}")
    assert r.status_code == 200 and r.json()["room_id"] == room, r.text
    joined = server.request("GET", f"{CS}/rooms/{quote(room)}/joined_members", token=alice["access_token"]).json()["joined"]
    assert set(joined) == {alice["user_id"], bob["user_id"]}
    assert joined[bob["user_id"]]["display_name"] == bob["user_id"][1:].split(":")[0], "joins carry the profile"
    assert members(server, alice["access_token"], room, membership="join").keys() == {alice["user_id"], bob["user_id"]}

    # Forgetting needs leaving first.
    r = post(server, bob["access_token"], f"/rooms/{quote(room)}/forget")
    assert r.status_code == 400
    assert post(server, bob["access_token"], f"/rooms/{quote(room)}/leave").status_code == 200
    assert members(server, alice["access_token"], room, not_membership="join") == {bob["user_id"]: "leave"}
    assert server.request("GET", f"{CS}/joined_rooms", token=bob["access_token"]).json()["joined_rooms"] == []
    assert post(server, bob["access_token"], f"/rooms/{quote(room)}/forget").status_code == 200
    forbidden(post(server, bob["access_token"], f"/rooms/{quote(room)}/leave"), "cannot leave")
    r = post(server, bob["access_token"], f"/join/{quote('#nope:' + server.server_name)}")
    assert r.status_code == 404


def test_invite_only_needs_an_invite(server):
    alice, bob, room, _ = setup(server, "private_chat")
    forbidden(post(server, bob["access_token"], f"/rooms/{quote(room)}/join"), "join rule")
    forbidden(post(server, bob["access_token"], f"/rooms/{quote(room)}/invite", {"user_id": bob["user_id"]}), "not joined")
    assert post(server, alice["access_token"], f"/rooms/{quote(room)}/invite", {"user_id": bob["user_id"]}).status_code == 200
    assert members(server, alice["access_token"], room)[bob["user_id"]] == "invite"
    assert post(server, bob["access_token"], f"/rooms/{quote(room)}/join").status_code == 200
    # A user of a server that cannot be reached: its server must countersign
    # the invite, so nothing is sent and the room does not change.
    r = post(server, alice["access_token"], f"/rooms/{quote(room)}/invite", {"user_id": "@someone:127.0.0.1:1"})
    assert r.status_code == 502 and r.json()["errcode"] == "M_UNKNOWN", r.text
    assert "@someone:127.0.0.1:1" not in members(server, alice["access_token"], room)


def test_kick_ban_unban_and_power(server):
    alice, bob, room, _ = setup(server, "public_chat")
    carol = server.register(unique("carol"))
    for user in (bob, carol):
        assert post(server, user["access_token"], f"/rooms/{quote(room)}/join").status_code == 200

    # Without power Bob changes nothing, and the state stays as it was.
    r = server.request("PUT", f"{CS}/rooms/{quote(room)}/state/m.room.name/", token=bob["access_token"], json={"name": "Bob's"})
    forbidden(r, "below the required level")
    assert server.request("GET", f"{CS}/rooms/{quote(room)}/state/m.room.name", token=bob["access_token"]).json() == {"name": "Club"}
    forbidden(post(server, bob["access_token"], f"/rooms/{quote(room)}/kick", {"user_id": alice["user_id"]}), "kick level")
    forbidden(post(server, bob["access_token"], f"/rooms/{quote(room)}/ban", {"user_id": carol["user_id"]}), "ban level")

    # Alice kicks Carol, who may come back; kicking a stranger is refused.
    assert post(server, alice["access_token"], f"/rooms/{quote(room)}/kick", {"user_id": carol["user_id"], "reason": "calm down"}).status_code == 200
    assert members(server, alice["access_token"], room)[carol["user_id"]] == "leave"
    assert post(server, carol["access_token"], f"/rooms/{quote(room)}/join").status_code == 200
    stranger = server.register(unique("stranger"))
    forbidden(post(server, alice["access_token"], f"/rooms/{quote(room)}/kick", {"user_id": stranger["user_id"]}), "not in the room")

    # Alice bans Bob: he cannot rejoin, nor unban himself; unbanning lets him back.
    assert post(server, alice["access_token"], f"/rooms/{quote(room)}/ban", {"user_id": bob["user_id"]}).status_code == 200
    forbidden(post(server, bob["access_token"], f"/rooms/{quote(room)}/join"), "banned")
    forbidden(post(server, bob["access_token"], f"/rooms/{quote(room)}/unban", {"user_id": bob["user_id"]}), "cannot leave")
    forbidden(post(server, alice["access_token"], f"/rooms/{quote(room)}/unban", {"user_id": carol["user_id"]}), "not banned")
    assert post(server, alice["access_token"], f"/rooms/{quote(room)}/unban", {"user_id": bob["user_id"]}).status_code == 200
    assert post(server, bob["access_token"], f"/rooms/{quote(room)}/join").status_code == 200
    # Bob, without the ban level, cannot unban Carol: she stays banned.
    assert post(server, alice["access_token"], f"/rooms/{quote(room)}/ban", {"user_id": carol["user_id"]}).status_code == 200
    forbidden(post(server, bob["access_token"], f"/rooms/{quote(room)}/unban", {"user_id": carol["user_id"]}), "ban level")
    assert members(server, alice["access_token"], room)[carol["user_id"]] == "ban"
    # Non-members do not see the member list.
    forbidden(server.request("GET", f"{CS}/rooms/{quote(room)}/members", token=stranger["access_token"]), "not joined")


def test_knock_and_members_at_a_token(server):
    """Knocking (room v7+ with the `knock` join rule), the knock section of
    sync, and `/members?at=` answering from the state at a sync token."""
    alice, bob = server.register(unique("alice")), server.register(unique("bob"))
    a, b = alice["access_token"], bob["access_token"]
    room = server.request("POST", f"{CS}/createRoom", token=a, json={"initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]}).json()["room_id"]
    before = server.request("GET", f"{CS}/sync", token=a).json()["next_batch"]
    r = server.request("POST", f"{CS}/knock/{quote(room)}", token=b, json={"reason": "let me in"})
    assert r.status_code == 200, r.text
    assert r.json()["room_id"] == room
    knocked = server.request("GET", f"{CS}/sync", token=b).json()["rooms"]["knock"][room]["knock_state"]["events"]
    assert any(e["type"] == "m.room.member" and e["content"]["membership"] == "knock" for e in knocked)
    assert any(e["type"] == "m.room.join_rules" for e in knocked)
    members = server.request("GET", f"{CS}/rooms/{quote(room)}/members", token=a, params={"membership": "knock"}).json()["chunk"]
    assert [m["state_key"] for m in members] == [bob["user_id"]]
    # At the earlier token Bob was not there yet.
    then = server.request("GET", f"{CS}/rooms/{quote(room)}/members", token=a, params={"at": before}).json()["chunk"]
    assert [m["state_key"] for m in then] == [alice["user_id"]]
    # The admin lets Bob in by inviting him; he joins.
    assert server.request("POST", f"{CS}/rooms/{quote(room)}/invite", token=a, json={"user_id": bob["user_id"]}).status_code == 200
    assert server.request("POST", f"{CS}/rooms/{quote(room)}/join", token=b, json={}).status_code == 200

    # Knocking where the join rule does not allow it is refused.
    public = server.request("POST", f"{CS}/createRoom", token=a, json={"preset": "public_chat"}).json()["room_id"]
    carol = server.register(unique("carol"))
    r = server.request("POST", f"{CS}/knock/{quote(public)}", token=carol["access_token"], json={})
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    old = server.request("POST", f"{CS}/createRoom", token=a, json={"room_version": "6", "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]})
    if old.status_code == 200:
        r = server.request("POST", f"{CS}/knock/{quote(old.json()['room_id'])}", token=carol["access_token"], json={})
        assert r.status_code == 403, "room version 6 has no knocking"
