"""`POST /search` over room events (word prefixes, all words, newest
first, paging, filters, context, redactions, visibility) and
`POST /user_directory/search` (users sharing a room, or in a published room)."""

from urllib.parse import quote

from conftest import unique
from test_ephemeral import two_in_a_room
from test_sync import send

CS = "/_matrix/client/v3"


def search(server, token, term, next_batch=None, **criteria):
    params = {"next_batch": next_batch} if next_batch else {}
    r = server.request("POST", f"{CS}/search", token=token, params=params, json={"search_categories": {"room_events": {"search_term": term, **criteria}}})
    assert r.status_code == 200, r.text
    return r.json()["search_categories"]["room_events"]


def ids(found):
    return [r["result"]["event_id"] for r in found["results"]]


def test_search_room_events(server):
    alice, bob, room = two_in_a_room(server)
    a, b = alice["access_token"], bob["access_token"]
    tomato = [send(server, a, room, f"Tomato number {i}, ripe") for i in range(5)]
    send(server, b, room, "Potatoes are not tomatoes? They are!")
    basil = send(server, b, room, "Basil goes with TOMATOES")

    found = search(server, b, "tomato")
    assert found["count"] == 7 and "tomato" in found["highlights"]
    assert ids(found)[0] == basil, "newest first; words match as prefixes, any case"
    both = search(server, b, "ripe tomato")
    assert ids(both) == list(reversed(tomato)), "every word must match"

    # Paging with next_batch.
    first = search(server, b, "tomato", filter={"limit": 3})
    assert len(first["results"]) == 3 and first["next_batch"]
    rest = search(server, b, "tomato", next_batch=first["next_batch"], filter={"limit": 10})
    assert ids(first) + ids(rest) == ids(found) and "next_batch" not in rest

    # Filters: senders, rooms; keys.
    assert ids(search(server, b, "tomato", filter={"senders": [bob["user_id"]]}))[0] == basil
    other = server.request("POST", f"{CS}/createRoom", token=b, json={"name": "Tomato garden"}).json()["room_id"]
    names = search(server, b, "garden", keys=["content.name"])
    assert [r["result"]["type"] for r in names["results"]] == ["m.room.name"]
    assert search(server, b, "garden", filter={"rooms": [room]})["results"] == []
    assert other not in [r["result"]["room_id"] for r in search(server, a, "garden")["results"]], "not Alice's room"

    # Context around a result.
    ctx = search(server, b, "basil", event_context={"before_limit": 2, "after_limit": 1})
    assert [e["content"]["body"] for e in ctx["results"][0]["context"]["events_before"]][0].startswith("Potatoes")

    # A redacted message no longer matches.
    server.request("PUT", f"{CS}/rooms/{quote(room)}/redact/{quote(basil)}/{unique('r')}", token=b, json={})
    assert basil not in ids(search(server, b, "basil"))

    r = server.request("POST", f"{CS}/search", token=b, json={"search_categories": {"room_events": {"search_term": "  "}}})
    assert (r.status_code, r.json()["errcode"]) == (400, "M_BAD_JSON")
    r = server.request("POST", f"{CS}/search", token=b, json={})
    assert r.status_code == 400


def test_user_directory(server):
    alice, bob, room = two_in_a_room(server)
    server.request("PUT", f"{CS}/profile/{quote(bob['user_id'])}/displayname", token=bob["access_token"], json={"displayname": "Bobby Tables"})
    server.request("POST", f"{CS}/rooms/{quote(room)}/leave", token=bob["access_token"], json={})
    server.request("POST", f"{CS}/rooms/{quote(room)}/join", token=bob["access_token"], json={})
    loner = server.register(unique("hermit"))
    public_member = server.register(unique("pubby"))
    public = server.request("POST", f"{CS}/createRoom", token=public_member["access_token"], json={"preset": "public_chat", "visibility": "public"}).json()["room_id"]
    assert public

    def find(term, **extra):
        r = server.request("POST", f"{CS}/user_directory/search", token=alice["access_token"], json={"search_term": term, **extra})
        assert r.status_code == 200, r.text
        return r.json()

    found = find("tables")
    assert [u["user_id"] for u in found["results"]] == [bob["user_id"]]
    assert found["results"][0]["display_name"] == "Bobby Tables" and found["limited"] is False
    assert [u["user_id"] for u in find(public_member["user_id"].split(":")[0][1:])["results"]] == [public_member["user_id"]]
    assert find(loner["user_id"].split(":")[0][1:])["results"] == [], "shares no room, in no public room"
    limited = find("localhost", limit=1)
    assert len(limited["results"]) == 1 and limited["limited"] is True
