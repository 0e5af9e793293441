"""Federation that survives its servers going away: a fork made while the
link is cut heals into one state on both sides with no message lost, and
events queued for a peer survive `kill -9`."""

import time

import pytest

from conftest import unique
from federation import Synapse, federation_env, register


@pytest.fixture
def pair(make_server, tmp_path):
    ours = make_server(federation_env(tmp_path))
    synapse = Synapse(tmp_path / "synapse", "resilience").start()
    yield ours, synapse
    synapse.stop()


def state_map(client, room) -> dict:
    events = client.call("GET", f"/_matrix/client/v3/rooms/{room}/state").json()
    return {(e["type"], e["state_key"]): e["event_id"] for e in events}


def bodies(client, room) -> list[str]:
    return [e["content"]["body"] for e in client.messages(room, limit=100)
            if e["type"] == "m.room.message"]


def wait_until(check, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_a_fork_made_while_cut_off_heals_into_one_state(pair):
    ours, synapse = pair
    alice = register(ours.url, unique("alice"))
    bob = synapse.register(unique("bob"))
    room = bob.create_room(preset="public_chat", room_version="11")
    alice.join(room, via=[synapse.server_name])
    levels = bob.state(room, "m.room.power_levels").json()
    levels["users"][alice.user_id] = 50
    bob.state(room, "m.room.power_levels", content=levels)
    alice.wait_for(lambda b: state_map(alice, room).get(("m.room.power_levels", "")) ==
                   state_map(bob, room)[("m.room.power_levels", "")], "the new power levels here")

    # Synapse's side of the fork, while we are down.
    ours.stop()
    bob.send(room, "s1")
    bob.state(room, "m.room.topic", content={"topic": "from synapse"})
    bob.send(room, "s2")
    synapse.stop()
    # Ours, while Synapse is down.
    ours.start()
    alice.send(room, "c1")
    alice.state(room, "m.room.topic", content={"topic": "from conduit"})
    alice.send(room, "c2")
    synapse.start()
    bob.send(room, "s3")

    expected = {"s1", "s2", "s3", "c1", "c2"}
    wait_until(lambda: expected <= set(bodies(alice, room)), "every message here")
    wait_until(lambda: expected <= set(bodies(bob, room)), "every message on synapse")
    wait_until(lambda: state_map(alice, room) == state_map(bob, room),
               "both servers agreeing on the room state")
    topic = alice.state(room, "m.room.topic").json()["topic"]
    assert topic == bob.state(room, "m.room.topic").json()["topic"]
    assert topic in {"from synapse", "from conduit"}


def test_queued_events_survive_kill_9_and_arrive_once(pair):
    ours, synapse = pair
    alice = register(ours.url, unique("alice"))
    bob = synapse.register(unique("bob"))
    room = alice.create_room(preset="public_chat")
    bob.join(room, via=[ours.server_name])
    alice.wait_for_event(room, lambda e: e.get("state_key") == bob.user_id, "bob's join")

    synapse.stop()
    sent = [alice.send(room, f"queued {i}") for i in range(5)]
    ours.kill()  # SIGKILL: the queue is all that is left
    ours.start()
    synapse.start()
    bob.send(room, "synapse is back")  # wakes our retry at once

    def arrived():
        events = [e for e in bob.messages(room, limit=100) if e["type"] == "m.room.message"]
        ids = [e["event_id"] for e in events]
        return all(i in ids for i in sent) and ids
    ids = wait_until(arrived, "every queued event on synapse")
    for event_id in sent:
        assert ids.count(event_id) == 1
