"""Two people in a room, driven by matrix-nio: each createRoom preset, invite
and join, 200 messages paged back across a sync gap, name/topic/power level
changes, redaction, kick and ban, aliases, reactions and threads, typing and
receipts, the published room directory, and unread counts. Each check is
what the other user's client sees, as the spec says it must."""

import asyncio
import json
import time
from urllib.parse import quote

import nio
import pytest

from conftest import unique

PASSWORD = "correct horse battery"
CS = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"


def run(server, tmp_path, scenario, alice_name=None):
    """Registers Alice and Bob as nio clients and runs `scenario(alice, bob)`."""

    async def main():
        alice = nio.AsyncClient(server.url, store_path=str(tmp_path))
        bob = nio.AsyncClient(server.url, store_path=str(tmp_path))
        try:
            assert isinstance(await alice.register(unique("alice"), PASSWORD), nio.RegisterResponse)
            assert isinstance(await bob.register(unique("bob"), PASSWORD), nio.RegisterResponse)
            if alice_name:
                assert isinstance(await alice.set_displayname(alice_name), nio.ProfileSetDisplayNameResponse)
            await scenario(alice, bob)
        finally:
            await alice.close()
            await bob.close()

    asyncio.run(main())


async def raw(client, method, path, body=None):
    """An endpoint nio has no typed call for, over nio's own transport: (status, json)."""
    data = json.dumps(body) if body is not None else None
    response = await client.send(method, path, data, headers={"Authorization": f"Bearer {client.access_token}"})
    return response.status, await response.json()


async def synced(client, since=None, **kwargs):
    response = await client.sync(timeout=0, since=since, **kwargs)
    assert isinstance(response, nio.SyncResponse), response
    return response


async def initial_sync(client, **kwargs):
    """A sync without `since` (nio would otherwise continue from its last token)."""
    client.next_batch = client.loaded_sync_token = None
    return await synced(client, **kwargs)


async def sync_until(client, since, done, timeout=10.0, **kwargs):
    """Incremental syncs from `since` until `done(response)`; returns that response."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.sync(timeout=500, since=since, **kwargs)
        assert isinstance(response, nio.SyncResponse), response
        if done(response):
            return response
        since = response.next_batch
        assert time.monotonic() < deadline, f"{client.user_id} never saw it; last sync: {response}"


def timeline(response, room):
    joined = response.rooms.join.get(room)
    return joined.timeline.events if joined else []


def ephemeral(response, room, kind):
    joined = response.rooms.join.get(room)
    return [e for e in (joined.ephemeral if joined else []) if isinstance(e, kind)]


async def send(client, room, body, **content):
    sent = await client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": body, **content})
    assert isinstance(sent, nio.RoomSendResponse), sent
    return sent.event_id


async def shared_room(alice, bob, preset=nio.RoomPreset.public_chat, **kwargs):
    """Alice creates a room and invites Bob, who joins."""
    created = await alice.room_create(preset=preset, invite=[bob.user_id], **kwargs)
    assert isinstance(created, nio.RoomCreateResponse), created
    joined = await bob.join(created.room_id)
    assert isinstance(joined, nio.JoinResponse), joined
    return created.room_id


@pytest.mark.parametrize(
    "preset, join_rule, guest_access",
    [("private_chat", "invite", "can_join"), ("trusted_private_chat", "invite", "can_join"), ("public_chat", "public", "forbidden")],
)
def test_presets_invite_and_join(server, tmp_path, preset, join_rule, guest_access):
    """Each preset sets the spec's join rule, history visibility and guest
    access; the creator holds power 100 and, in trusted_private_chat only, so
    does the invitee. Bob sees the invite in sync, and Alice sees his join."""

    async def scenario(alice, bob):
        bob_since = (await synced(bob)).next_batch
        created = await alice.room_create(preset=nio.RoomPreset(preset), invite=[bob.user_id], name=f"{preset} room")
        assert isinstance(created, nio.RoomCreateResponse), created
        room = created.room_id

        got = await alice.room_get_state(room)
        assert isinstance(got, nio.RoomGetStateResponse), got
        state = {(e["type"], e["state_key"]): e["content"] for e in got.events}
        assert state[("m.room.join_rules", "")] == {"join_rule": join_rule}
        assert state[("m.room.history_visibility", "")] == {"history_visibility": "shared"}
        # No m.room.guest_access event means "forbidden" (Synapse sends none for public_chat).
        assert state.get(("m.room.guest_access", ""), {"guest_access": "forbidden"}) == {"guest_access": guest_access}
        assert state[("m.room.member", bob.user_id)]["membership"] == "invite"
        create = state[("m.room.create", "")]
        users = state[("m.room.power_levels", "")]["users"]
        if int(create["room_version"]) < 12:
            assert users[alice.user_id] == 100
            if preset == "trusted_private_chat":
                assert users[bob.user_id] == 100, "trusted_private_chat gives invitees the creator's level"
            else:
                assert bob.user_id not in users, users
        else:
            # v12: creators have infinite power and are not listed in `users`.
            assert alice.user_id not in users and bob.user_id not in users, users
            if preset == "trusted_private_chat":
                assert bob.user_id in create.get("additional_creators", []), create

        # createRoom's order: create, creator's join, power levels, preset events, name, invites.
        forward = await alice.room_messages(room, direction=nio.MessageDirection.front, limit=50)
        assert isinstance(forward, nio.RoomMessagesResponse), forward
        kinds = [(e.source["type"], e.source.get("state_key")) for e in forward.chunk]
        preset_events = [("m.room.join_rules", ""), ("m.room.history_visibility", ""), ("m.room.guest_access", "")]
        assert kinds == [
            ("m.room.create", ""),
            ("m.room.member", alice.user_id),
            ("m.room.power_levels", ""),
            *[kind for kind in preset_events if kind in state],
            ("m.room.name", ""),
            ("m.room.member", bob.user_id),
        ], kinds

        invited = await sync_until(bob, bob_since, lambda r: room in r.rooms.invite)
        stripped = invited.rooms.invite[room].invite_state
        assert [e.name for e in stripped if isinstance(e, nio.InviteNameEvent)] == [f"{preset} room"]
        assert (bob.user_id, "invite") in [(e.state_key, e.membership) for e in stripped if isinstance(e, nio.InviteMemberEvent)]
        assert bob.invited_rooms[room].name == f"{preset} room"

        alice_since = (await synced(alice)).next_batch
        joined = await bob.join(room)
        assert isinstance(joined, nio.JoinResponse), joined
        await sync_until(
            alice,
            alice_since,
            lambda r: any(isinstance(e, nio.RoomMemberEvent) and e.state_key == bob.user_id and e.membership == "join" for e in timeline(r, room)),
        )
        assert alice.rooms[room].users.keys() == {alice.user_id, bob.user_id}
        await synced(bob)
        assert bob.rooms[room].join_rule == join_rule
        assert bob.rooms[room].guest_access == guest_access
        assert bob.rooms[room].history_visibility == "shared"

    run(server, tmp_path, scenario)


def test_200_messages_paged_back_across_a_sync_gap(server, tmp_path):
    """Alice and Bob take turns sending 200 messages. Bob's next sync is
    limited to 10 events: `limited` is true, and /messages backwards from its
    `prev_batch` returns the other 190, so every message arrives exactly once,
    in order, and paging ends at the room's creation."""

    async def scenario(alice, bob):
        room = await shared_room(alice, bob)
        since = (await synced(bob)).next_batch
        sent = []
        for i in range(200):
            sender = alice if i % 2 == 0 else bob
            sent.append(await send(sender, room, f"message {i}"))

        gap = await synced(bob, since, sync_filter={"room": {"timeline": {"limit": 10}}})
        tl = gap.rooms.join[room].timeline
        assert tl.limited is True
        assert [e.event_id for e in tl.events] == sent[-10:]
        assert [e.body for e in tl.events] == [f"message {i}" for i in range(190, 200)]
        assert tl.prev_batch

        older, token, pages = [], tl.prev_batch, 0
        while token:
            page = await bob.room_messages(room, start=token, limit=50)
            assert isinstance(page, nio.RoomMessagesResponse), page
            older += page.chunk
            token = page.end if page.chunk else None
            pages += 1
            assert pages < 20, "paging never ends"
        messages = [e.event_id for e in reversed(older) if e.source["type"] == "m.room.message"]
        assert messages + [e.event_id for e in tl.events] == sent
        assert older[-1].source["type"] == "m.room.create", "paging back reaches the room's start"
        senders = [e.sender for e in reversed(older) if e.source["type"] == "m.room.message"]
        assert senders[:4] == [alice.user_id, bob.user_id] * 2

    run(server, tmp_path, scenario)


def test_name_topic_and_power_levels_reach_the_other_user(server, tmp_path):
    """Alice's name, topic and power level changes come down Bob's sync
    timeline, and nio's room model follows them. Bob's new power lets him
    change the topic; when Alice's next sync is limited, that change is in
    her sync's `state` section (state between `since` and the timeline)."""

    async def scenario(alice, bob):
        room = await shared_room(alice, bob, name="Before", topic="Old topic")
        since = (await synced(bob)).next_batch
        assert bob.rooms[room].name == "Before"

        denied = await bob.room_put_state(room, "m.room.topic", {"topic": "Bob was here"})
        assert isinstance(denied, nio.RoomPutStateError) and denied.status_code == "M_FORBIDDEN", denied

        assert isinstance(await alice.room_put_state(room, "m.room.name", {"name": "After"}), nio.RoomPutStateResponse)
        assert isinstance(await alice.room_put_state(room, "m.room.topic", {"topic": "New topic"}), nio.RoomPutStateResponse)
        levels = await alice.room_get_state_event(room, "m.room.power_levels")
        content = {**levels.content, "users": {**levels.content["users"], bob.user_id: 50}}
        assert isinstance(await alice.room_put_state(room, "m.room.power_levels", content), nio.RoomPutStateResponse)

        seen = {}

        def collect(response):
            for e in timeline(response, room):
                if e.source.get("state_key") == "":
                    seen[e.source["type"]] = e.source["content"]
            return "m.room.power_levels" in seen and seen["m.room.power_levels"]["users"].get(bob.user_id) == 50

        await sync_until(bob, since, collect)
        assert seen["m.room.name"] == {"name": "After"}
        assert seen["m.room.topic"]["topic"] == "New topic"
        assert bob.rooms[room].name == "After"
        assert bob.rooms[room].topic == "New topic"
        assert bob.rooms[room].power_levels.get_user_level(bob.user_id) == 50

        # Bob, now at 50, changes the topic and chats; Alice syncs with a gap.
        alice_since = (await synced(alice)).next_batch
        assert isinstance(await bob.room_put_state(room, "m.room.topic", {"topic": "Bob's topic"}), nio.RoomPutStateResponse)
        for i in range(5):
            await send(bob, room, f"after topic {i}")
        gap = await synced(alice, alice_since, sync_filter={"room": {"timeline": {"limit": 2}}})
        joined = gap.rooms.join[room]
        assert joined.timeline.limited is True
        state = {(e.source["type"], e.source["state_key"]): e.source["content"] for e in joined.state}
        assert state.get(("m.room.topic", "")) == {"topic": "Bob's topic"}, state
        assert alice.rooms[room].topic == "Bob's topic"

    run(server, tmp_path, scenario)


def test_redaction_as_the_other_user_sees_it(server, tmp_path):
    """Alice redacts Bob's message: Bob's sync brings the m.room.redaction,
    and he then gets the message stripped with `redacted_because`, from /event
    and from a fresh sync. In v11 `redacts` sits in content; room v11 says
    servers should also put it at the top level for older clients, and nio
    0.26 is one: without it nio does not see a RedactionEvent."""

    async def scenario(alice, bob):
        room = await shared_room(alice, bob)
        since = (await synced(bob)).next_batch
        regret = await send(bob, room, "something I regret")
        since = (await sync_until(bob, since, lambda r: regret in [e.event_id for e in timeline(r, room)])).next_batch

        redacted = await alice.room_redact(room, regret, reason="spam")
        assert isinstance(redacted, nio.RoomRedactResponse), redacted
        got = await bob.room_get_event(room, regret)
        assert isinstance(got, nio.RoomGetEventResponse), got
        assert isinstance(got.event, nio.RedactedEvent), got.event
        assert got.event.source["content"] == {}
        assert got.event.source["unsigned"]["redacted_because"]["event_id"] == redacted.event_id
        assert got.event.reason == "spam" and got.event.redacter == alice.user_id
        # A fresh sync serves the message already stripped.
        fresh = await initial_sync(bob, sync_filter={"room": {"timeline": {"limit": 5}}})
        served = {e.event_id: e for e in timeline(fresh, room)}
        assert isinstance(served[regret], nio.RedactedEvent), served[regret]
        assert served[regret].source["content"] == {}

        response = await sync_until(bob, since, lambda r: any(e.source.get("type") == "m.room.redaction" for e in timeline(r, room)))
        redaction = next(e for e in timeline(response, room) if e.source.get("type") == "m.room.redaction")
        assert redaction.source["content"] == {"redacts": regret, "reason": "spam"}
        assert redaction.source.get("redacts") == regret, f"no top-level redacts for older clients: {redaction.source}"
        assert isinstance(redaction, nio.RedactionEvent), redaction
        assert redaction.redacts == regret and redaction.reason == "spam" and redaction.sender == alice.user_id

    run(server, tmp_path, scenario)


def test_kick_and_ban_as_the_other_user_sees_them(server, tmp_path):
    """Alice kicks Bob: his sync moves the room to `leave` with her reason.
    He rejoins the public room, she bans him: his sync shows the ban, and his
    join is refused with 403 M_FORBIDDEN."""

    async def scenario(alice, bob):
        room = await shared_room(alice, bob)

        def last_membership(response):
            left = response.rooms.leave.get(room)
            members = [e for e in (left.timeline.events if left else []) if isinstance(e, nio.RoomMemberEvent)]
            return members[-1] if members else None

        since = (await synced(bob)).next_batch
        assert isinstance(await alice.room_kick(room, bob.user_id, reason="cool off"), nio.RoomKickResponse)
        kicked = await sync_until(bob, since, lambda r: getattr(last_membership(r), "membership", None) == "leave")
        member = last_membership(kicked)
        assert (member.state_key, member.sender, member.content.get("reason")) == (bob.user_id, alice.user_id, "cool off")
        assert room not in kicked.rooms.join

        assert isinstance(await bob.join(room), nio.JoinResponse)
        assert isinstance(await alice.room_ban(room, bob.user_id, reason="enough"), nio.RoomBanResponse)
        banned = await sync_until(bob, kicked.next_batch, lambda r: getattr(last_membership(r), "membership", None) == "ban")
        member = last_membership(banned)
        assert (member.state_key, member.sender, member.content.get("reason")) == (bob.user_id, alice.user_id, "enough")
        again = await bob.join(room)
        assert isinstance(again, nio.JoinError), again
        assert again.status_code == "M_FORBIDDEN" and again.transport_response.status == 403, again
        members = await alice.joined_members(room)
        assert [m.user_id for m in members.members] == [alice.user_id]

    run(server, tmp_path, scenario)


def test_alias_lookup(server, tmp_path):
    """Alice names her room with an alias; Bob resolves it to the room and
    this server, and joins through it."""

    async def scenario(alice, bob):
        created = await alice.room_create(preset=nio.RoomPreset.public_chat)
        room = created.room_id
        alias = f"#{unique('club')}:{server.server_name}"
        assert isinstance(await alice.room_put_alias(alias, room), nio.RoomPutAliasResponse)
        resolved = await bob.room_resolve_alias(alias)
        assert isinstance(resolved, nio.RoomResolveAliasResponse), resolved
        assert resolved.room_id == room and resolved.servers == [server.server_name]
        joined = await bob.join(alias)
        assert isinstance(joined, nio.JoinResponse) and joined.room_id == room, joined
        missing = await bob.room_resolve_alias(f"#{unique('nope')}:{server.server_name}")
        assert isinstance(missing, nio.RoomResolveAliasError) and missing.status_code == "M_NOT_FOUND", missing

    run(server, tmp_path, scenario)


def test_reactions_threads_and_relations(server, tmp_path):
    """Bob reacts to Alice's message and replies in a thread on it, and Alice
    replies too; Bob starts a second thread alone. /relations lists children
    most recent first (filtered by rel_type and event type, paginated with
    next_batch), /threads orders roots by latest reply, and each root's
    unsigned.m.relations.m.thread has count, latest_event and
    current_user_participated for the asking user."""

    async def scenario(alice, bob):
        room = await shared_room(alice, bob)
        root = await send(alice, room, "what shall we read next?")
        since = (await synced(alice)).next_batch
        reaction = await bob.room_send(room, "m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}})
        assert isinstance(reaction, nio.RoomSendResponse), reaction

        def in_thread(root_id):
            relation = {"rel_type": "m.thread", "event_id": root_id, "is_falling_back": True, "m.in_reply_to": {"event_id": root_id}}
            return {"m.relates_to": relation}

        bob_reply = await send(bob, room, "Dune!", **in_thread(root))
        alice_reply = await send(alice, room, "again?", **in_thread(root))
        other_root = await send(bob, room, "anyone for chess?")
        other_reply = await send(bob, room, "I'll bring the board", **in_thread(other_root))

        # Alice sees Bob's reaction and threaded reply with their relations intact.
        response = await sync_until(alice, since, lambda r: bob_reply in [e.event_id for e in timeline(r, room)])
        events = {e.event_id: e for e in timeline(response, room)}
        assert isinstance(events[reaction.event_id], nio.ReactionEvent) and events[reaction.event_id].key == "👍"
        assert events[bob_reply].source["content"]["m.relates_to"]["rel_type"] == "m.thread"

        base = f"{V1}/rooms/{quote(room)}/relations/{quote(root)}"
        status, everything = await raw(alice, "GET", base)
        assert status == 200, everything
        assert [e["event_id"] for e in everything["chunk"]] == [alice_reply, bob_reply, reaction.event_id]
        status, threaded = await raw(alice, "GET", f"{base}/m.thread")
        assert status == 200, threaded
        assert [e["event_id"] for e in threaded["chunk"]] == [alice_reply, bob_reply]
        status, reactions = await raw(alice, "GET", f"{base}/m.annotation/m.reaction")
        assert status == 200, reactions
        assert [e["content"]["m.relates_to"]["key"] for e in reactions["chunk"]] == ["👍"]
        status, forward = await raw(alice, "GET", f"{base}?dir=f")
        assert [e["event_id"] for e in forward["chunk"]] == [reaction.event_id, bob_reply, alice_reply], forward
        # One at a time with next_batch: each child once.
        paged, query = [], "limit=1"
        for _ in range(5):
            status, page = await raw(alice, "GET", f"{base}?{query}")
            assert status == 200 and len(page["chunk"]) <= 1, page
            paged += [e["event_id"] for e in page["chunk"]]
            if "next_batch" not in page:
                break
            query = f"limit=1&from={quote(page['next_batch'])}"
        assert paged == [alice_reply, bob_reply, reaction.event_id]
        # nio's own iterator agrees.
        assert [e.event_id async for e in alice.room_get_event_relations(room, root, nio.api.RelationshipType.thread)] == [alice_reply, bob_reply]

        status, threads = await raw(alice, "GET", f"{V1}/rooms/{quote(room)}/threads")
        assert status == 200, threads
        assert [e["event_id"] for e in threads["chunk"]] == [other_root, root], "ordered by latest reply"
        summaries = {e["event_id"]: e["unsigned"]["m.relations"]["m.thread"] for e in threads["chunk"]}
        assert summaries[root]["count"] == 2
        assert summaries[root]["latest_event"]["event_id"] == alice_reply
        assert summaries[root]["latest_event"]["content"]["body"] == "again?"
        assert summaries[root]["current_user_participated"] is True
        assert summaries[other_root]["count"] == 1
        assert summaries[other_root]["latest_event"]["event_id"] == other_reply
        assert summaries[other_root]["current_user_participated"] is False, "Alice neither started nor replied"
        status, mine = await raw(alice, "GET", f"{V1}/rooms/{quote(room)}/threads?include=participated")
        assert status == 200 and [e["event_id"] for e in mine["chunk"]] == [root], mine
        assert [e.event_id async for e in bob.room_get_threads(room)] == [other_root, root]

        # The bundled aggregation also comes with the root from /event, for Bob.
        got = await bob.room_get_event(room, root)
        summary = got.event.source["unsigned"]["m.relations"]["m.thread"]
        assert summary["count"] == 2 and summary["current_user_participated"] is True
        assert summary["latest_event"]["event_id"] == alice_reply

        # A second identical annotation is refused (spec: SHOULD, 400 M_DUPLICATE_ANNOTATION).
        duplicate = await bob.room_send(room, "m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}})
        assert isinstance(duplicate, nio.RoomSendError) and duplicate.status_code == "M_DUPLICATE_ANNOTATION", duplicate
        assert duplicate.transport_response.status == 400

    run(server, tmp_path, scenario)


def test_typing_receipts_and_read_markers(server, tmp_path):
    """Alice's typing shows in Bob's sync `ephemeral` as m.typing and is gone
    (empty user_ids) in a later sync after she stops. Bob's read receipt
    reaches Alice as m.receipt {event_id: {m.read: {user: {ts}}}}; his
    /read_markers call moves his m.fully_read room account data and his
    receipt."""

    async def scenario(alice, bob):
        room = await shared_room(alice, bob)
        first = await send(alice, room, "first")
        second = await send(alice, room, "second")
        bob_since = (await synced(bob)).next_batch
        alice_since = (await synced(alice)).next_batch

        typing = await alice.room_typing(room, True, 30000)
        assert isinstance(typing, nio.RoomTypingResponse), typing
        seen = await sync_until(bob, bob_since, lambda r: any(e.users == [alice.user_id] for e in ephemeral(r, room, nio.TypingNoticeEvent)))
        assert isinstance(await alice.room_typing(room, False), nio.RoomTypingResponse)
        await sync_until(bob, seen.next_batch, lambda r: any(e.users == [] for e in ephemeral(r, room, nio.TypingNoticeEvent)))

        receipt = await bob.update_receipt_marker(room, first)
        assert isinstance(receipt, nio.UpdateReceiptMarkerResponse), receipt

        def receipts(response):
            return [(r.event_id, r.receipt_type, r.user_id) for e in ephemeral(response, room, nio.ReceiptEvent) for r in e.receipts]

        got = await sync_until(alice, alice_since, lambda r: (first, "m.read", bob.user_id) in receipts(r))
        stamp = next(r for e in ephemeral(got, room, nio.ReceiptEvent) for r in e.receipts if r.user_id == bob.user_id)
        assert isinstance(stamp.timestamp, int) and stamp.timestamp > 0
        assert stamp.thread_id == "main", "nio sent thread_id main; it comes back"

        markers = await bob.room_read_markers(room, fully_read_event=second, read_event=second)
        assert isinstance(markers, nio.RoomReadMarkersResponse), markers
        await sync_until(alice, got.next_batch, lambda r: (second, "m.read", bob.user_id) in receipts(r))
        mine = await sync_until(
            bob,
            bob_since,
            lambda r: any(isinstance(e, nio.FullyReadEvent) and e.event_id == second for e in (r.rooms.join[room].account_data if room in r.rooms.join else [])),
        )
        assert (second, "m.read", bob.user_id) in receipts(mine), "Bob sees his own receipt too"

    run(server, tmp_path, scenario)


def test_published_room_directory(server, tmp_path):
    """A room created with visibility public and one published later with
    PUT /directory/list/room are in /publicRooms (with their name, topic,
    alias and member count); an unpublished room is not. A search term
    narrows the list, and limit/since pagination yields each room once.
    Unpublishing removes a room."""

    async def scenario(alice, bob):
        alias = unique("lounge")
        lounge = await alice.room_create(
            visibility=nio.RoomVisibility.public, preset=nio.RoomPreset.public_chat, name="Alpha Lounge", topic="tea and biscuits", alias=alias
        )
        garage = await alice.room_create(preset=nio.RoomPreset.public_chat, name="Beta Garage")
        hideout = await alice.room_create(preset=nio.RoomPreset.private_chat, name="Gamma Hideout")
        assert isinstance(await bob.join(lounge.room_id), nio.JoinResponse)

        visibility = await bob.room_get_visibility(lounge.room_id)
        assert isinstance(visibility, nio.RoomGetVisibilityResponse), visibility
        assert visibility.visibility == "public"
        assert (await bob.room_get_visibility(garage.room_id)).visibility == "private"
        status, body = await raw(alice, "PUT", f"{CS}/directory/list/room/{quote(garage.room_id)}", {"visibility": "public"})
        assert status == 200, body
        assert (await bob.room_get_visibility(garage.room_id)).visibility == "public"

        listed = await bob.list_public_rooms()
        assert isinstance(listed, nio.responses.PublicRoomsResponse), listed
        rooms = {r.room_id: r for r in listed.public_rooms}
        assert rooms.keys() == {lounge.room_id, garage.room_id}, rooms.keys()
        assert hideout.room_id not in rooms
        entry = rooms[lounge.room_id]
        assert entry.name == "Alpha Lounge" and entry.topic == "tea and biscuits"
        assert entry.canonical_alias == f"#{alias}:{server.server_name}"
        assert entry.num_joined_members == 2
        assert entry.world_readable is False and entry.guest_can_join is False
        assert entry.join_rule in (None, "public")

        found = await bob.list_public_rooms(filter_generic_search_term="Lounge")
        assert isinstance(found, nio.responses.PublicRoomsResponse), found
        assert [r.room_id for r in found.public_rooms] == [lounge.room_id]
        by_topic = await bob.list_public_rooms(filter_generic_search_term="biscuits")
        assert [r.room_id for r in by_topic.public_rooms] == [lounge.room_id]
        nothing = await bob.list_public_rooms(filter_generic_search_term="zeppelin")
        assert nothing.public_rooms == []

        first = await bob.list_public_rooms(limit=1)
        assert len(first.public_rooms) == 1 and first.next_batch, first
        second = await bob.list_public_rooms(limit=1, since=first.next_batch)
        assert len(second.public_rooms) == 1 and second.next_batch is None, second
        assert {first.public_rooms[0].room_id, second.public_rooms[0].room_id} == {lounge.room_id, garage.room_id}

        status, body = await raw(alice, "PUT", f"{CS}/directory/list/room/{quote(garage.room_id)}", {"visibility": "private"})
        assert status == 200, body
        assert [r.room_id for r in (await bob.list_public_rooms()).public_rooms] == [lounge.room_id]

    run(server, tmp_path, scenario)


def test_unread_notification_counts(server, tmp_path):
    """Bob's 3 messages give Alice notification_count 3 in the sync that
    brings them; her read receipt on the last one brings it to 0; a message
    mentioning her (display name in the body, m.mentions user_ids) gives
    highlight_count 1; her own next message clears it again."""

    async def scenario(alice, bob):
        room = await shared_room(alice, bob)
        since = (await synced(alice)).next_batch
        sent = [await send(bob, room, f"unread {i}") for i in range(3)]

        def counts(response):
            unread = response.rooms.join[room].unread_notifications
            return unread.notification_count, unread.highlight_count

        got = await sync_until(alice, since, lambda r: sent[-1] in [e.event_id for e in timeline(r, room)])
        assert counts(got) == (3, 0)

        assert isinstance(await alice.update_receipt_marker(room, sent[-1]), nio.UpdateReceiptMarkerResponse)
        read = await sync_until(
            alice,
            got.next_batch,
            lambda r: any(rc.user_id == alice.user_id for e in ephemeral(r, room, nio.ReceiptEvent) for rc in e.receipts),
        )
        assert counts(read) == (0, 0)

        mention = await send(bob, room, "Alice Liddell, your turn", **{"m.mentions": {"user_ids": [alice.user_id]}})
        got = await sync_until(alice, read.next_batch, lambda r: mention in [e.event_id for e in timeline(r, room)])
        assert counts(got) == (1, 1)

        # Sending an event marks everything before it read too (push module:
        # "either by using the API or by sending an event ... MUST be marked as read").
        await send(alice, room, "coming!")
        assert counts(await initial_sync(alice)) == (0, 0)

    run(server, tmp_path, scenario, alice_name="Alice Liddell")


def test_an_image_sent_and_downloaded_with_a_thumbnail(server, tmp_path):
    """Alice uploads a picture and sends it as m.image; Bob downloads it and a
    thumbnail of the size he asks through authenticated media (nio's own
    download and thumbnail calls)."""
    import io

    from test_media import jpeg_size, png

    async def scenario(alice, bob):
        room = await shared_room(alice, bob)
        since = (await initial_sync(bob)).next_batch
        picture = png(400, 300, (250, 200, 0))
        uploaded, _ = await alice.upload(io.BytesIO(picture), content_type="image/png",
                                         filename="sun.png", filesize=len(picture))
        assert isinstance(uploaded, nio.UploadResponse), uploaded
        sent = await alice.room_send(room, "m.room.message", {
            "msgtype": "m.image", "body": "sun.png", "url": uploaded.content_uri,
            "info": {"mimetype": "image/png", "w": 400, "h": 300, "size": len(picture)},
        })
        assert isinstance(sent, nio.RoomSendResponse), sent
        seen = await sync_until(bob, since, lambda r: any(
            isinstance(e, nio.RoomMessageImage) for e in timeline(r, room)))
        image = next(e for e in timeline(seen, room) if isinstance(e, nio.RoomMessageImage))
        assert image.url == uploaded.content_uri

        downloaded = await bob.download(mxc=image.url)
        assert isinstance(downloaded, nio.MemoryDownloadResponse), downloaded
        assert downloaded.body == picture and downloaded.content_type == "image/png"
        assert downloaded.filename == "sun.png"
        server_name, media_id = image.url[len("mxc://"):].split("/")
        thumbnail = await bob.thumbnail(server_name, media_id, 320, 240, nio.ResizingMethod.scale)
        assert isinstance(thumbnail, nio.ThumbnailResponse), thumbnail
        assert thumbnail.content_type == "image/jpeg" and jpeg_size(thumbnail.body) == (320, 240)
        cropped = await bob.thumbnail(server_name, media_id, 32, 32, nio.ResizingMethod.crop)
        assert jpeg_size(cropped.body) == (32, 32)

    run(server, tmp_path, scenario)
