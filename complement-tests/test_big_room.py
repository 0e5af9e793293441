"""Joining a room of 1,000 members hosted by a fake federation of 300
servers (big_room.py), living in it, a fork in it resolved as ruma's state
resolution resolves it, and hostile `send_join` answers."""

import json
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import urllib3

from big_room import BigRoom
from conftest import ROOT, binary
from federation import federation_env, register

urllib3.disable_warnings()

MEMBERS = 1000


@pytest.fixture
def big(tmp_path):
    room = BigRoom(tmp_path / "peer", MEMBERS).start()
    yield room
    room.close()


@pytest.fixture
def ours(make_server, tmp_path):
    return make_server(federation_env(tmp_path / "ours"))


def join(client, big: BigRoom, expect: int = 200):
    room = quote(big.room.room_id, safe="")
    return client.call("POST", f"/_matrix/client/v3/join/{room}?server_name={quote(big.home.name)}",
                       json={}, expect=expect)


def joined_in_peer_state(big: BigRoom) -> set[str]:
    room = big.room
    return {key for (kind, key), event_id in room.state.items()
            if kind == "m.room.member" and room.events[event_id].pdu["content"]["membership"] == "join"}


def state_of(client, room_id: str) -> dict[tuple[str, str], str]:
    events = client.call("GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/state").json()
    return {(e["type"], e["state_key"]): e["event_id"] for e in events}


def log_of(server) -> str:
    return server.log_path.read_text(errors="replace")


def test_join_then_talk_both_ways_and_list_members(ours, big):
    alice = register(ours.url, "alice")
    started = time.monotonic()
    join(alice, big)
    assert time.monotonic() - started < 30
    room_id = big.room.room_id
    # The admin sees how the join went.
    status = subprocess.run([str(binary()), "admin", "rooms", "join-status"], env=ours.env,
                            capture_output=True, text=True, timeout=60, cwd=ours.data_dir)
    assert status.returncode == 0, status.stderr
    assert f"{room_id} through {big.home.name}: joined in" in status.stdout, status.stdout

    joined = alice.call("GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/joined_members").json()
    assert set(joined["joined"]) == joined_in_peer_state(big)
    assert alice.user_id in joined["joined"]
    # The state is the fake federation's, event for event.
    expected = {key: event_id for key, event_id in big.room.state.items()}
    assert state_of(alice, room_id) == expected
    # Every key of the 300 servers was fetched from the server itself.
    assert big.requests.get("/_matrix/key/v2/server", 0) + big.requests.get("v2/server", 0) >= 299

    # Our message reaches the room's servers.
    alice.send(room_id, "hello, big room")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        bodies = [p["content"].get("body") for t in list(big.received) for p in t.get("pdus", [])]
        if "hello, big room" in bodies:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the fake federation never received our message")

    # A member's message comes in over /send and reaches sync.
    alice.sync()
    event = big.message(7, "hello from a member")
    r = big.send_pdus(ours.server_name, [event.pdu])
    assert r.status_code == 200 and r.json()["pdus"][event.event_id] == {}, r.text
    alice.wait_for_message(room_id, "hello from a member")

    # /members filtered to joins lists them all; lazy loading sends only
    # the members the timeline needs, not a thousand.
    members = alice.call("GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/members",
                         params={"membership": "join"}).json()["chunk"]
    assert len(members) == len(joined_in_peer_state(big))
    lazy = json.dumps({"room": {"state": {"lazy_load_members": True},
                                "timeline": {"limit": 5, "lazy_load_members": True}}})
    body = alice.call("GET", "/_matrix/client/v3/sync", params={"filter": lazy}).json()
    room = body["rooms"]["join"][room_id]
    member_events = [e for e in room["state"]["events"] if e["type"] == "m.room.member"]
    senders = {e["sender"] for e in room["timeline"]["events"]}
    assert {e["state_key"] for e in member_events} <= senders | {alice.user_id}
    assert room["summary"]["m.joined_member_count"] == len(joined_in_peer_state(big))


def oracle_binary() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR") or str(ROOT / "target")
    path = Path(target) / "debug" / "examples" / "ruma_oracle"
    assert path.is_file(), f"{path} is missing: cargo build -p conduit-state-res --example ruma_oracle"
    return path


def ruma_resolution(big: BigRoom, state_sets: list[dict]) -> dict[tuple[str, str], str]:
    """What ruma's state resolution makes of `state_sets` in the room."""
    events = []
    for event_id, event in big.room.events.items():
        events.append({**event.pdu, "event_id": event_id})
    query = {"room_version": big.room.version, "events": events,
             "state_sets": [list(s.values()) for s in state_sets]}
    out = subprocess.run([str(oracle_binary())], input=json.dumps(query).encode(), capture_output=True,
                         check=True, timeout=120)
    return {(kind, key): event_id for kind, key, event_id in json.loads(out.stdout)}


def test_a_fork_resolves_as_rumas_state_resolution_does(ours, big):
    alice = register(ours.url, "alice")
    join(alice, big)
    room_id = big.room.room_id
    room = big.room
    base = list(room.extremities)
    before = dict(room.state)
    creator = big.creator
    # A moderator made in the room's history, not the creator.
    moderator = next(u for u, level in big.power["users"].items() if level == 50)

    # Branch A: the creator takes the moderator's power away.
    power = json.loads(json.dumps(big.power))
    del power["users"][moderator]
    demote = big.make_event(creator, "m.room.power_levels", power, "", prev_events=base, add=False)
    # Branch B, concurrently: the moderator changes the topic (allowed by
    # the power levels it cites).
    topic = big.make_event(moderator, "m.room.topic", {"topic": "the moderator's topic"}, "",
                           prev_events=base, add=False)
    for event in (demote, topic):
        room.events[event.event_id] = event
        room.order.append(event.event_id)
    state_a = {**before, ("m.room.power_levels", ""): demote.event_id}
    state_b = {**before, ("m.room.topic", ""): topic.event_id}
    expected = ruma_resolution(big, [state_a, state_b])
    # ruma keeps the demotion and drops the topic, which the demoted
    # moderator may no longer set.
    assert expected[("m.room.power_levels", "")] == demote.event_id
    assert expected[("m.room.topic", "")] == before[("m.room.topic", "")]

    # A merge on top of both, then a message after it.
    room.state = expected
    room.extremities = [demote.event_id, topic.event_id]
    merge = big.make_event(creator, "m.room.message", {"msgtype": "m.text", "body": "merged"})
    for event in (demote, topic, merge):
        r = big.send_pdus(ours.server_name, [event.pdu], origin=big.home)
        assert r.status_code == 200, r.text
    alice.wait_for_message(room_id, "merged")
    assert state_of(alice, room_id) == expected


@pytest.mark.parametrize("tamper", ["forge_member", "unauthorised_name", "truncate_auth_chain"])
def test_hostile_send_join_answers_leave_the_bad_events_out(ours, big, tamper):
    alice = register(ours.url, "alice")
    victim = big.user(big.member(10))
    big.tamper = {
        "forge_member": {"forge_member": victim},
        "unauthorised_name": {"unauthorised_name": victim},
        "truncate_auth_chain": {"truncate_auth_chain": True},
    }[tamper]
    join(alice, big)
    room_id = big.room.room_id
    joined = set(alice.call("GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/joined_members")
                 .json()["joined"])
    state = state_of(alice, room_id)
    log = log_of(ours)
    if tamper == "forge_member":
        assert victim not in joined
        assert len(joined) == len(joined_in_peer_state(big)) - 1
        assert "Signature check failed" in log
    elif tamper == "unauthorised_name":
        assert ("m.room.name", "") not in state
        assert "outlier rejected" in log
        assert len(joined) == len(joined_in_peer_state(big))
    else:
        # The power levels left out of the chain are fetched one by one.
        assert "fetching missing auth events" in log
        assert set(state) == set(big.room.state)
        assert len(joined) == len(joined_in_peer_state(big))
    # The server still works.
    alice.send(room_id, "still here")


def test_a_truncated_auth_chain_nobody_can_complete_refuses_the_join(ours, big):
    alice = register(ours.url, "alice")
    big.tamper = {"truncate_auth_chain": True, "hide_dropped": True}
    r = join(alice, big, expect=403)
    assert "auth event" in r.json()["error"], r.text
    assert "outliers left out: an auth event is missing" in log_of(ours)
    r = alice.call("GET", f"/_matrix/client/v3/rooms/{quote(big.room.room_id, safe='')}/state", expect=None)
    assert r.status_code in (403, 404), r.text


def test_an_answer_too_large_is_refused_and_nothing_is_stored(ours, big):
    alice = register(ours.url, "alice")
    big.tamper = {"pad_to_bytes": 200 * 1024 * 1024}
    r = join(alice, big, expect=None)
    assert r.status_code >= 400, r.text
    assert "larger than" in log_of(ours) or "too large" in log_of(ours).lower()
    r = alice.call("GET", f"/_matrix/client/v3/rooms/{quote(big.room.room_id, safe='')}/state", expect=None)
    assert r.status_code in (403, 404), r.text
    # The server is well and can still join once the answer is sane.
    big.tamper = {}
    join(alice, big)
