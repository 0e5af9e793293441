"""Room aliases: create, resolve, list, delete, with their permissions."""

from urllib.parse import quote

from conftest import unique

CS = "/_matrix/client/v3"


def test_alias_lifecycle(server):
    alice = server.register(unique("alice"))
    bob = server.register(unique("bob"))
    room = server.request("POST", f"{CS}/createRoom", token=alice["access_token"], json={"preset": "public_chat"}).json()["room_id"]
    alias = f"#{unique('a')}:{server.server_name}"
    path = f"{CS}/directory/room/{quote(alias)}"

    assert server.request("GET", path).status_code == 404
    # Only members name a room.
    r = server.request("PUT", path, token=bob["access_token"], json={"room_id": room})
    assert r.status_code == 403
    assert server.request("PUT", path, token=alice["access_token"], json={"room_id": room}).status_code == 200
    r = server.request("PUT", path, token=alice["access_token"], json={"room_id": room})
    assert r.status_code == 409
    r = server.request("PUT", f"{CS}/directory/room/{quote('#x:elsewhere.org')}", token=alice["access_token"], json={"room_id": room})
    assert r.status_code == 400
    resolved = server.request("GET", path).json()
    assert resolved == {"room_id": room, "servers": [server.server_name]}

    # Bob joins by the alias, and may list but not delete it.
    assert server.request("POST", f"{CS}/join/{quote(alias)}", token=bob["access_token"], json={}).status_code == 200
    listed = server.request("GET", f"{CS}/rooms/{quote(room)}/aliases", token=bob["access_token"]).json()
    assert listed == {"aliases": [alias]}
    assert server.request("DELETE", path, token=bob["access_token"]).status_code == 403
    assert server.request("DELETE", path, token=alice["access_token"]).status_code == 200
    assert server.request("GET", path).status_code == 404
    assert server.request("DELETE", path, token=alice["access_token"]).status_code == 404
