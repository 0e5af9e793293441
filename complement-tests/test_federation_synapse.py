"""Federation with a real Synapse on loopback, both directions: joins,
messages, invites, leaves and kicks, typing and receipts, profiles, and
the notary."""

import time

import pytest
import requests
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import verify_signed_json
from unpaddedbase64 import decode_base64

from conftest import unique
from federation import Client, Synapse, federation_env, ours, register, synapse_peer  # noqa: F401 (ours is a fixture)


synapse = synapse_peer("federation")


def local_user(server) -> Client:
    return register(server.url, unique("alice"))


def members(client: Client, room: str) -> dict[str, str]:
    chunk = client.call("GET", f"/_matrix/client/v3/rooms/{room}/members").json()["chunk"]
    return {e["state_key"]: e["content"]["membership"] for e in chunk}


def test_synapse_user_joins_our_room_and_messages_flow_both_ways(ours, synapse):
    alice = local_user(ours)
    bob = synapse.register(unique("bob"))
    room = alice.create_room(preset="public_chat", name="ours")
    alice.send(room, "before bob")

    bob.join(room, via=[ours.server_name])
    alice.wait_for_event(room, lambda e: e["type"] == "m.room.member" and e["state_key"] == bob.user_id
                         and e["content"]["membership"] == "join", "bob's join")
    # Bob's server got the room's state in the join: the name shows there.
    assert bob.state(room, "m.room.name").json()["name"] == "ours"

    alice.send(room, "hello from conduit")
    bob.wait_for_message(room, "hello from conduit")
    bob.send(room, "hello from synapse")
    alice.wait_for_message(room, "hello from synapse")
    assert members(alice, room)[bob.user_id] == "join"


@pytest.mark.parametrize("version", ["1", "3", "6", "9", "10", "11", "12"])
def test_our_user_joins_a_synapse_room_and_messages_flow_both_ways(ours, synapse, version):
    alice = local_user(ours)
    bob = synapse.register(unique("bob"))
    room = bob.create_room(preset="public_chat", room_version=version, name=f"synapse v{version}")
    bob.send(room, "written before alice came")

    alice.join(room, via=[synapse.server_name])
    # The state came with the join: name and members are known here.
    assert alice.state(room, "m.room.name").json()["name"] == f"synapse v{version}"
    assert members(alice, room)[bob.user_id] == "join"
    bob.wait_for_event(room, lambda e: e["type"] == "m.room.member" and e["state_key"] == alice.user_id,
                       "alice's join")

    bob.send(room, f"v{version} from synapse")
    alice.wait_for_message(room, f"v{version} from synapse")
    alice.send(room, f"v{version} from conduit")
    bob.wait_for_message(room, f"v{version} from conduit")


def test_join_through_a_remote_alias(ours, synapse):
    alice = local_user(ours)
    bob = synapse.register(unique("bob"))
    localpart = unique("room")
    room = bob.create_room(preset="public_chat", room_alias_name=localpart)
    alias = f"#{localpart}:{synapse.server_name}"
    r = alice.call("POST", f"/_matrix/client/v3/join/{requests.utils.quote(alias)}", json={})
    assert r.json()["room_id"] == room
    assert members(alice, room)[alice.user_id] == "join"
    # An alias nobody has is the remote server's 404.
    missing = requests.utils.quote(f"#{unique('none')}:{synapse.server_name}")
    r = alice.call("POST", f"/_matrix/client/v3/join/{missing}", json={}, expect=404)
    assert r.json()["errcode"] == "M_NOT_FOUND"


def test_invites_both_ways(ours, synapse):
    alice = local_user(ours)
    bob = synapse.register(unique("bob"))

    # Ours invites a Synapse user: Synapse countersigns, bob sees the invite and joins.
    room = alice.create_room(preset="private_chat", name="private")
    alice.membership(room, "invite", bob.user_id)
    bob.wait_for(lambda b: room in b.get("rooms", {}).get("invite", {}), "the invite on synapse")
    bob.join(room, via=[ours.server_name])
    alice.wait_for_event(room, lambda e: e["type"] == "m.room.member" and e["state_key"] == bob.user_id
                         and e["content"]["membership"] == "join", "bob's join")

    # Synapse invites ours: the invite shows in our sync with its stripped state.
    theirs = bob.create_room(preset="private_chat", name="synapse private")
    bob.membership(theirs, "invite", alice.user_id)
    invite = alice.wait_for(lambda b: b.get("rooms", {}).get("invite", {}).get(theirs), "the invite here")
    names = [e for e in invite["invite_state"]["events"] if e["type"] == "m.room.name"]
    assert names and names[0]["content"]["name"] == "synapse private"
    alice.join(theirs)
    assert members(alice, theirs)[alice.user_id] == "join"
    bob.wait_for_event(theirs, lambda e: e["type"] == "m.room.member" and e["state_key"] == alice.user_id
                       and e["content"]["membership"] == "join", "alice's join")

    # A rejected invite goes back through Synapse.
    third = bob.create_room(preset="private_chat")
    bob.membership(third, "invite", alice.user_id)
    alice.wait_for(lambda b: third in b.get("rooms", {}).get("invite", {}), "the second invite")
    alice.membership(third, "leave")
    alice.wait_for(lambda b: third in b.get("rooms", {}).get("leave", {}), "the rejection in sync")
    deadline = time.monotonic() + 20
    while members(bob, third).get(alice.user_id) != "leave":
        assert time.monotonic() < deadline, "synapse never saw the rejection"
        time.sleep(0.3)


def test_leave_and_kick_both_ways(ours, synapse):
    alice = local_user(ours)
    carol = local_user(ours)
    bob = synapse.register(unique("bob"))
    room = alice.create_room(preset="public_chat")
    carol.join(room)
    bob.join(room, via=[ours.server_name])
    alice.wait_for_event(room, lambda e: e.get("state_key") == bob.user_id, "bob's join")

    # We kick a Synapse user; Synapse sees it.
    alice.membership(room, "kick", bob.user_id)
    deadline = time.monotonic() + 20
    while members(alice, room).get(bob.user_id) != "leave":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    bob.wait_for(lambda b: room in b.get("rooms", {}).get("leave", {}), "the kick on synapse")

    # A Synapse room: they kick one of ours, and ours leaves by itself.
    theirs = bob.create_room(preset="public_chat")
    alice.join(theirs, via=[synapse.server_name])
    carol.join(theirs, via=[synapse.server_name])
    bob.wait_for_event(theirs, lambda e: e.get("state_key") == carol.user_id, "carol's join")
    bob.membership(theirs, "kick", alice.user_id)
    alice.wait_for(lambda b: theirs in b.get("rooms", {}).get("leave", {}), "the kick here")
    carol.membership(theirs, "leave")
    deadline = time.monotonic() + 20
    while members(bob, theirs).get(carol.user_id) != "leave":
        assert time.monotonic() < deadline, "synapse never saw carol leave"
        time.sleep(0.3)


def test_typing_and_receipts_both_ways(ours, synapse):
    alice = local_user(ours)
    bob = synapse.register(unique("bob"))
    room = alice.create_room(preset="public_chat")
    bob.join(room, via=[ours.server_name])
    alice.wait_for_event(room, lambda e: e.get("state_key") == bob.user_id, "bob's join")

    def typing_users(client, body):
        ephemeral = body.get("rooms", {}).get("join", {}).get(room, {}).get("ephemeral", {}).get("events", [])
        for event in ephemeral:
            if event["type"] == "m.typing":
                return event["content"]["user_ids"]
        return None

    alice.call("PUT", f"/_matrix/client/v3/rooms/{room}/typing/{alice.user_id}",
               json={"typing": True, "timeout": 20000})
    bob.wait_for(lambda b: alice.user_id in (typing_users(bob, b) or []), "alice typing on synapse")
    bob.call("PUT", f"/_matrix/client/v3/rooms/{room}/typing/{bob.user_id}",
             json={"typing": True, "timeout": 20000})
    alice.wait_for(lambda b: bob.user_id in (typing_users(alice, b) or []), "bob typing here")

    def read_by(body, user):
        ephemeral = body.get("rooms", {}).get("join", {}).get(room, {}).get("ephemeral", {}).get("events", [])
        for event in ephemeral:
            if event["type"] == "m.receipt":
                for event_id, kinds in event["content"].items():
                    if user in kinds.get("m.read", {}):
                        return event_id
        return None

    first = alice.send(room, "read me")
    bob.wait_for_message(room, "read me")
    bob.call("POST", f"/_matrix/client/v3/rooms/{room}/receipt/m.read/{first}", json={})
    assert alice.wait_for(lambda b: read_by(b, bob.user_id), "bob's receipt here") == first
    second = bob.send(room, "and me")
    alice.wait_for_message(room, "and me")
    alice.call("POST", f"/_matrix/client/v3/rooms/{room}/receipt/m.read/{second}", json={})
    assert bob.wait_for(lambda b: read_by(b, alice.user_id), "alice's receipt on synapse") == second


def test_remote_display_names_show(ours, synapse):
    alice = local_user(ours)
    bob = synapse.register(unique("bob"))
    bob.call("PUT", f"/_matrix/client/v3/profile/{bob.user_id}/displayname", json={"displayname": "Bob B."})
    alice.call("PUT", f"/_matrix/client/v3/profile/{alice.user_id}/displayname", json={"displayname": "Alice A."})
    room = alice.create_room(preset="public_chat")
    bob.join(room, via=[ours.server_name])
    event = alice.wait_for_event(room, lambda e: e.get("state_key") == bob.user_id, "bob's join")
    assert event["content"]["displayname"] == "Bob B."
    # Profiles are asked of the user's own server, both ways.
    assert alice.call("GET", f"/_matrix/client/v3/profile/{bob.user_id}").json()["displayname"] == "Bob B."
    assert bob.call("GET", f"/_matrix/client/v3/profile/{alice.user_id}").json()["displayname"] == "Alice A."


def test_our_notary_vouches_for_synapse_keys(ours, synapse):
    r = ours.request("POST", "/_matrix/key/v2/query", json={"server_keys": {synapse.server_name: {}}})
    assert r.status_code == 200, r.text
    [answer] = r.json()["server_keys"]
    assert answer["server_name"] == synapse.server_name
    # Synapse's own signature, checked with the key Synapse serves itself...
    own = requests.get(f"https://{synapse.server_name}/_matrix/key/v2/server", verify=False, timeout=10).json()
    for key_id, key in own["verify_keys"].items():
        verify = decode_verify_key_bytes(key_id, decode_base64(key["key"]))
        verify.version = key_id.split(":", 1)[1]
        verify_signed_json(answer, synapse.server_name, verify)
    # ...and ours, as the notary.
    ours_keys = ours.request("GET", "/_matrix/key/v2/server").json()
    [(key_id, key)] = ours_keys["verify_keys"].items()
    verify = decode_verify_key_bytes(key_id, decode_base64(key["key"]))
    verify.version = key_id.split(":", 1)[1]
    verify_signed_json(answer, ours.server_name, verify)
    # The GET form answers the same, and a server that cannot be reached gets no entry.
    r = ours.request("GET", f"/_matrix/key/v2/query/{synapse.server_name}")
    assert r.json()["server_keys"][0]["verify_keys"] == answer["verify_keys"]
    r = ours.request("POST", "/_matrix/key/v2/query", json={"server_keys": {"127.0.0.1:1": {}}})
    assert r.status_code == 200 and r.json()["server_keys"] == []


def test_server_acls_both_ways(make_server, tmp_path, synapse):
    # Our server answers as 127.0.0.2: an ACL names hosts, not ports.
    ours = make_server(federation_env(tmp_path, host="127.0.0.2"))
    alice = register(ours.url, unique("alice"))
    bob = synapse.register(unique("bob"))

    # Synapse's room denies our server: our users can send nothing more
    # there, and Synapse never shows anything of ours after the ACL.
    room = bob.create_room(preset="public_chat")
    alice.join(room, via=[synapse.server_name])
    alice.send(room, "before the acl")
    bob.wait_for_message(room, "before the acl")
    acl = {"allow": ["*"], "deny": ["127.0.0.2"], "allow_ip_literals": True}
    bob.state(room, "m.room.server_acl", content=acl)
    alice.wait_for_event(room, lambda e: e["type"] == "m.room.server_acl", "the ACL here")
    r = alice.call("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/acl1",
                   json={"msgtype": "m.text", "body": "after the acl"}, expect=403)
    assert r.json()["errcode"] == "M_FORBIDDEN"
    bob.send(room, "synapse still talks")
    time.sleep(1)
    assert "after the acl" not in [e["content"].get("body") for e in bob.messages(room)]

    # Our room denies Synapse's server: what Synapse sends is refused here.
    ours_room = alice.create_room(preset="public_chat")
    bob.join(ours_room, via=[ours.server_name])
    alice.wait_for_event(ours_room, lambda e: e.get("state_key") == bob.user_id, "bob's join")
    alice.state(ours_room, "m.room.server_acl",
                content={"allow": ["*"], "deny": ["127.0.0.1"], "allow_ip_literals": True})
    bob.wait_for_event(ours_room, lambda e: e["type"] == "m.room.server_acl", "the ACL on synapse")
    bob.send(ours_room, "from a denied server", )
    alice.send(ours_room, "marker after")
    time.sleep(2)
    assert "from a denied server" not in [e["content"].get("body") for e in alice.messages(ours_room)]


def test_messages_backfills_history_from_before_we_joined(ours, synapse):
    alice = local_user(ours)
    bob = synapse.register(unique("bob"))
    room = bob.create_room(preset="public_chat", name="history")
    written = [f"old {i}" for i in range(30)]
    for text in written:
        bob.send(room, text)
    alice.join(room, via=[synapse.server_name])

    # Page back in small steps: the first pages come from Synapse.
    seen, token = [], None
    for _ in range(20):
        params = {"dir": "b", "limit": 8}
        if token:
            params["from"] = token
        page = alice.call("GET", f"/_matrix/client/v3/rooms/{room}/messages", params=params).json()
        seen.extend(e for e in page["chunk"])
        token = page.get("end")
        if not token:
            break
    bodies = [e["content"]["body"] for e in seen if e["type"] == "m.room.message"]
    assert bodies == list(reversed(written)), bodies
    kinds = [e["type"] for e in seen]
    assert kinds[-1] == "m.room.create", "history goes back to the room's creation"
    ids = [e["event_id"] for e in seen]
    assert len(ids) == len(set(ids)), "no event twice"
    # Once fetched, history is local: a second walk asks nobody and agrees.
    again = alice.messages(room, limit=100)
    assert [e["event_id"] for e in again] == ids


def test_public_room_directories_both_ways(ours, synapse):
    alice = local_user(ours)
    bob = synapse.register(unique("bob"))
    ours_room = alice.create_room(preset="public_chat", name="listed here", visibility="public")
    theirs = bob.create_room(preset="public_chat", name="listed there", visibility="public")

    listed = bob.call("GET", "/_matrix/client/v3/publicRooms", params={"server": ours.server_name}).json()
    assert ours_room in [r["room_id"] for r in listed["chunk"]]
    # Synapse fills its directory from room statistics, in the background.
    deadline = time.monotonic() + 20
    while theirs not in [r["room_id"] for r in alice.call(
            "GET", "/_matrix/client/v3/publicRooms", params={"server": synapse.server_name}).json()["chunk"]]:
        assert time.monotonic() < deadline, "synapse's room never showed in its directory"
        time.sleep(0.5)
    found = alice.call("POST", f"/_matrix/client/v3/publicRooms?server={synapse.server_name}",
                       json={"filter": {"generic_search_term": "listed there"}, "limit": 5}).json()
    assert [r["name"] for r in found["chunk"]] == ["listed there"]
    found = bob.call("POST", f"/_matrix/client/v3/publicRooms?server={ours.server_name}",
                     json={"filter": {"generic_search_term": "nothing like it"}}).json()
    assert found["chunk"] == []


def wait_membership(client, room, user, membership, what):
    deadline = time.monotonic() + 20
    while members(client, room).get(user) != membership:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_knocks_both_ways(ours, synapse):
    alice = local_user(ours)
    bob = synapse.register(unique("bob"))
    knock_rule = [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]

    # Ours knocks on a Synapse room; bob lets alice in with an invite.
    theirs = bob.create_room(preset="private_chat", name="knock here", initial_state=knock_rule)
    alice.call("POST", f"/_matrix/client/v3/knock/{theirs}?via={synapse.server_name}", json={"reason": "hi"})
    knocked = alice.wait_for(lambda b: b.get("rooms", {}).get("knock", {}).get(theirs), "our knock in sync")
    assert any(e["type"] == "m.room.name" for e in knocked["knock_state"]["events"])
    wait_membership(bob, theirs, alice.user_id, "knock", "the knock on synapse")
    bob.membership(theirs, "invite", alice.user_id)
    alice.wait_for(lambda b: theirs in b.get("rooms", {}).get("invite", {}), "the invite after the knock")
    alice.join(theirs)
    assert members(alice, theirs)[alice.user_id] == "join"

    # Synapse knocks on ours; alice lets bob in.
    room = alice.create_room(preset="private_chat", initial_state=knock_rule)
    bob.call("POST", f"/_matrix/client/v3/knock/{room}?server_name={ours.server_name}&via={ours.server_name}",
             json={})
    wait_membership(alice, room, bob.user_id, "knock", "bob's knock here")
    alice.membership(room, "invite", bob.user_id)
    bob.wait_for(lambda b: room in b.get("rooms", {}).get("invite", {}), "the invite on synapse")
    bob.join(room, via=[ours.server_name])
    wait_membership(alice, room, bob.user_id, "join", "bob's join here")


def restricted_to(room):
    return [{"type": "m.room.join_rules", "state_key": "",
             "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": room}]}}]


def test_restricted_joins_both_ways(ours, synapse):
    alice = local_user(ours)
    bob = synapse.register(unique("bob"))

    # Our restricted room: bob gets in once he is in the room it names,
    # and we authorise (and sign) his join.
    space = alice.create_room(preset="public_chat", name="our space")
    inner = alice.create_room(preset="private_chat", room_version="10", initial_state=restricted_to(space))
    # Not yet in the space: we refuse to let him in (M_UNABLE_TO_GRANT_JOIN,
    # which Synapse's client sees as its failed join).
    r = bob.join(inner, via=[ours.server_name], expect=None)
    assert r.status_code != 200, r.text
    assert bob.user_id not in members(alice, inner)
    bob.join(space, via=[ours.server_name])
    bob.join(inner, via=[ours.server_name])
    wait_membership(alice, inner, bob.user_id, "join", "bob's restricted join here")

    # Synapse's restricted room: alice gets in through her membership of
    # Synapse's space; Synapse signs the join.
    their_space = bob.create_room(preset="public_chat", name="their space")
    their_inner = bob.create_room(preset="private_chat", room_version="10",
                                  initial_state=restricted_to(their_space))
    r = alice.join(their_inner, via=[synapse.server_name], expect=None)
    assert r.status_code in (400, 403), r.text
    assert alice.user_id not in members(bob, their_inner)
    alice.join(their_space, via=[synapse.server_name])
    alice.join(their_inner, via=[synapse.server_name])
    assert members(alice, their_inner)[alice.user_id] == "join"
    wait_membership(bob, their_inner, alice.user_id, "join", "alice's restricted join on synapse")


def make_space(client, server_name, child_name):
    space = client.create_room(preset="public_chat", name=f"space of {child_name}",
                               creation_content={"type": "m.space"})
    child = client.create_room(preset="public_chat", name=child_name)
    client.state(space, "m.space.child", child, content={"via": [server_name], "suggested": True})
    return space, child


def hierarchy_names(client, space, **params):
    answer = client.call("GET", f"/_matrix/client/v1/rooms/{space}/hierarchy", params=params).json()
    return [room.get("name") for room in answer["rooms"]], answer


def test_space_hierarchies_both_ways(ours, synapse):
    alice = local_user(ours)
    bob = synapse.register(unique("bob"))

    # A Synapse space: we are in the space only; its child is asked of Synapse.
    their_space, _ = make_space(bob, synapse.server_name, "their child")
    alice.join(their_space, via=[synapse.server_name])
    names, answer = hierarchy_names(alice, their_space)
    assert names == ["space of their child", "their child"], answer
    child_entry = answer["rooms"][1]
    # An absent join rule means public (the spec's default).
    assert child_entry.get("join_rule", "public") == "public" and child_entry["num_joined_members"] == 1
    assert [e["state_key"] for e in answer["rooms"][0]["children_state"]] == [child_entry["room_id"]]

    # Our space seen from Synapse: Synapse asks our /federation/v1/hierarchy.
    our_space, _ = make_space(alice, ours.server_name, "our child")
    bob.join(our_space, via=[ours.server_name])
    deadline = time.monotonic() + 20
    while True:
        names, answer = hierarchy_names(bob, our_space)
        if names == ["space of our child", "our child"]:
            break
        assert time.monotonic() < deadline, answer
        time.sleep(0.5)

    # Pages and depth.
    names, answer = hierarchy_names(alice, our_space, limit=1)
    assert names == ["space of our child"] and answer["next_batch"]
    names, _ = hierarchy_names(alice, our_space, limit=1, **{"from": answer["next_batch"]})
    assert names == ["our child"]
    names, _ = hierarchy_names(alice, our_space, max_depth=0)
    assert names == ["space of our child"]


def test_room_previews_of_rooms_elsewhere(ours, synapse):
    alice = local_user(ours)
    bob = synapse.register(unique("bob"))
    localpart = unique("preview")
    public = bob.create_room(preset="public_chat", name="come in", topic="a preview", room_alias_name=localpart)
    private = bob.create_room(preset="private_chat", name="secret")

    path = "/_matrix/client/v1/room_summary/"
    summary = alice.call("GET", path + public, params={"via": synapse.server_name}).json()
    assert (summary["room_id"], summary["name"], summary["topic"]) == (public, "come in", "a preview")
    assert summary["num_joined_members"] == 1 and "membership" not in summary
    alias = requests.utils.quote(f"#{localpart}:{synapse.server_name}")
    assert alice.call("GET", path + alias).json()["room_id"] == public
    r = alice.call("GET", path + private, params={"via": synapse.server_name}, expect=None)
    assert r.status_code in (403, 404), r.text
    # Once joined, the preview is local and names the membership.
    alice.join(public, via=[synapse.server_name])
    summary = alice.call("GET", path + public).json()
    assert summary["membership"] == "join" and summary["room_version"]


def test_a_synapse_uses_our_notary(ours, synapse, tmp_path):
    """A second Synapse trusts our server as its notary: to check the first
    Synapse's signatures it asks our /key/v2/query, verifies our answer, and
    its user's join into the first Synapse's room goes through."""
    second = Synapse(tmp_path / "second", "notary-client", trusted_key_servers=[ours.server_name]).start()
    try:
        bob = synapse.register(unique("bob"))
        carol = second.register(unique("carol"))
        room = bob.create_room(preset="public_chat")
        carol.join(room, via=[synapse.server_name])
        assert members(bob, room)[carol.user_id] == "join"
        asked = [line for line in ours.log().splitlines()
                 if "POST /_matrix/key/v2/query" in line and " 200 " in line]
        assert asked, "the second Synapse never asked our notary"
    finally:
        second.stop()


def test_presence_both_ways(ours, synapse):
    alice = local_user(ours)
    bob = synapse.register(unique("bob"))
    room = alice.create_room(preset="public_chat")
    bob.join(room, via=[ours.server_name])
    alice.wait_for_event(room, lambda e: e.get("state_key") == bob.user_id, "bob's join")

    def status(client, user):
        return client.call("GET", f"/_matrix/client/v3/presence/{user}/status", expect=None)

    alice.call("PUT", f"/_matrix/client/v3/presence/{alice.user_id}/status",
               json={"presence": "online", "status_msg": "from conduit"})
    bob.call("PUT", f"/_matrix/client/v3/presence/{bob.user_id}/status",
             json={"presence": "online", "status_msg": "from synapse"})
    deadline = time.monotonic() + 30
    while True:
        theirs = status(alice, bob.user_id)
        ours_seen = status(bob, alice.user_id)
        if (theirs.status_code == 200 and theirs.json().get("status_msg") == "from synapse"
                and ours_seen.status_code == 200 and ours_seen.json().get("status_msg") == "from conduit"):
            assert theirs.json()["presence"] == "online" and ours_seen.json()["presence"] == "online"
            break
        assert time.monotonic() < deadline, (theirs.text, ours_seen.text)
        time.sleep(0.5)
