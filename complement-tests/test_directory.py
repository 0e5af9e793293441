"""The public room directory: publishing (createRoom `visibility`,
`PUT /directory/list/room`), who may publish, and `/publicRooms` with its
search filter and pagination."""

from urllib.parse import quote

from conftest import unique

CS = "/_matrix/client/v3"


def create(server, token, **body):
    r = server.request("POST", f"{CS}/createRoom", token=token, json=body)
    assert r.status_code == 200, r.text
    return r.json()["room_id"]


def test_publish_search_and_paginate(server):
    alice = server.register(unique("alice"))
    bob = server.register(unique("bob"))
    a, b = alice["access_token"], bob["access_token"]
    tag = unique("dir")
    big = create(server, a, preset="public_chat", visibility="public", name=f"{tag} Gardening", topic="Tomatoes and more", room_alias_name=unique("garden"))
    server.request("POST", f"{CS}/rooms/{quote(big)}/join", token=b, json={})
    small = create(server, a, preset="public_chat", name=f"{tag} Chess")
    hidden = create(server, a, preset="private_chat", name=f"{tag} Secret")

    assert server.request("GET", f"{CS}/directory/list/room/{quote(big)}").json() == {"visibility": "public"}
    assert server.request("GET", f"{CS}/directory/list/room/{quote(small)}").json() == {"visibility": "private"}
    # Only moderators publish: Bob (default level) may not, Alice may.
    r = server.request("PUT", f"{CS}/directory/list/room/{quote(small)}", token=b, json={"visibility": "public"})
    assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN")
    r = server.request("PUT", f"{CS}/directory/list/room/{quote(small)}", token=a, json={"visibility": "public"})
    assert r.status_code == 200, r.text

    # GET needs no token; largest room first; the private room is absent.
    listed = server.request("GET", f"{CS}/publicRooms").json()
    ours = [room for room in listed["chunk"] if room["name"].startswith(tag)]
    assert [room["room_id"] for room in ours] == [big, small]
    garden = ours[0]
    assert garden["num_joined_members"] == 2 and garden["topic"] == "Tomatoes and more"
    # (An absent join_rule means public, per the spec.)
    assert garden["world_readable"] is False and garden["guest_can_join"] is False
    assert garden.get("join_rule", "public") == "public" and garden["canonical_alias"].startswith("#garden")
    assert hidden not in [room["room_id"] for room in listed["chunk"]]

    # Search matches name, topic or alias, case-insensitively (POST needs a token).
    found = server.request("POST", f"{CS}/publicRooms", token=b, json={"filter": {"generic_search_term": "TOMATO"}}).json()
    assert [room["room_id"] for room in found["chunk"]] == [big]
    assert server.request("POST", f"{CS}/publicRooms", json={}).status_code == 401

    # Pagination: one room per page, next_batch then prev_batch.
    rooms, since = [], None
    while True:
        page = server.request("POST", f"{CS}/publicRooms", token=a, json={"limit": 1, "filter": {"generic_search_term": tag}, **({"since": since} if since else {})}).json()
        rooms += [room["room_id"] for room in page["chunk"]]
        assert page["total_room_count_estimate"] == 2
        since = page.get("next_batch")
        if not since:
            break
    assert rooms == [big, small]
    assert page["prev_batch"] == "0"

    # Unpublishing removes it; unknown rooms are 404.
    server.request("PUT", f"{CS}/directory/list/room/{quote(small)}", token=a, json={"visibility": "private"})
    names = [room.get("name") for room in server.request("GET", f"{CS}/publicRooms").json()["chunk"]]
    assert f"{tag} Chess" not in names
    r = server.request("GET", f"{CS}/directory/list/room/{quote('!nope:localhost')}")
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    # Another server's directory is asked of it: one that cannot be reached
    # is a 502 (test_federation_synapse reads a real one).
    r = server.request("GET", f"{CS}/publicRooms", params={"server": "127.0.0.1:1"})
    assert (r.status_code, r.json()["errcode"]) == (502, "M_UNKNOWN"), r.text
