"""End-to-end encryption across federation with a real Synapse, raw HTTP:
keys queried and claimed both ways, to-device messages both ways, device
list updates and cross-signing keys arriving both ways."""

import time


from conftest import unique
from e2ee_raw import Device, cross_signing_key, login
from federation import ours, register, synapse_peer  # noqa: F401 (ours is a fixture)

PASSWORD = "correct horse battery"


synapse = synapse_peer("e2ee")


def eventually(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def device_of(client) -> Device:
    whoami = client.call("GET", "/_matrix/client/v3/account/whoami").json()
    return Device(client.base_url, client.user_id, client.token, whoami["device_id"])


def query(device: Device, user: str) -> dict:
    return device.call("POST", "/keys/query", json={"device_keys": {user: []}}).json()


def synced_to_device(device: Device, since: str, wanted) -> tuple[list, str]:
    """Syncs until a to-device event matches `wanted`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = device.call("GET", "/sync", params={"since": since, "timeout": "2000"}).json()
        since = body["next_batch"]
        events = [e for e in body.get("to_device", {}).get("events", []) if wanted(e)]
        if events:
            return events, since
    raise AssertionError("no to-device message arrived")


def changed_in_sync(device: Device, since: str, user: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = device.call("GET", "/sync", params={"since": since, "timeout": "2000"}).json()
        since = body["next_batch"]
        if user in body.get("device_lists", {}).get("changed", []):
            return since
    raise AssertionError(f"{user} never appeared in device_lists.changed")


def test_keys_to_device_and_device_lists_both_ways(ours, synapse):
    alice = device_of(register(ours.url, unique("alice"), PASSWORD))
    bob_client = synapse.register(unique("bob"))
    bob = device_of(bob_client)
    for device in (alice, bob):
        device.call(
            "POST",
            "/keys/upload",
            json={
                "device_keys": device.device_keys(),
                "one_time_keys": {"signed_curve25519:AAAA": device.signed_key("AAAA")},
            },
        )
    room = alice.call("POST", "/createRoom", json={"preset": "public_chat"}).json()["room_id"]
    bob.call("POST", f"/join/{room}?server_name={ours.server_name}", json={})
    eventually(
        lambda: bob.user_id in [
            m["state_key"]
            for m in alice.call("GET", f"/rooms/{room}/members").json()["chunk"]
            if m["content"]["membership"] == "join"
        ],
        "bob's join",
    )

    # Keys of the other server's user, both ways.
    theirs = query(alice, bob.user_id)
    assert theirs["failures"] == {}
    assert bob.device_id in theirs["device_keys"][bob.user_id]
    ours_seen = eventually(lambda: query(bob, alice.user_id)["device_keys"].get(alice.user_id), "alice's keys at synapse")
    assert alice.device_id in ours_seen
    claim = {"one_time_keys": {bob.user_id: {bob.device_id: "signed_curve25519"}}}
    claimed = alice.call("POST", "/keys/claim", json=claim).json()
    assert list(claimed["one_time_keys"][bob.user_id][bob.device_id]) == ["signed_curve25519:AAAA"]
    claim = {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}
    claimed = bob.call("POST", "/keys/claim", json=claim).json()
    assert list(claimed["one_time_keys"][alice.user_id][alice.device_id]) == ["signed_curve25519:AAAA"]

    # To-device both ways (the m.direct_to_device EDU).
    alice_since = alice.call("GET", "/sync", params={"timeout": "0"}).json()["next_batch"]
    bob_since = bob.call("GET", "/sync", params={"timeout": "0"}).json()["next_batch"]
    alice.call("PUT", "/sendToDevice/m.test/a1", json={"messages": {bob.user_id: {bob.device_id: {"from": "alice"}}}})
    events, bob_since = synced_to_device(bob, bob_since, lambda e: e["type"] == "m.test")
    assert events[0]["content"] == {"from": "alice"} and events[0]["sender"] == alice.user_id
    bob.call("PUT", "/sendToDevice/m.test/b1", json={"messages": {alice.user_id: {"*": {"from": "bob"}}}})
    events, alice_since = synced_to_device(alice, alice_since, lambda e: e["type"] == "m.test")
    assert events[0]["content"] == {"from": "bob"} and events[0]["sender"] == bob.user_id

    # A new device of alice's reaches Synapse as a device list update.
    alice2 = login(ours.url, alice.user_id, PASSWORD)
    alice2.call("POST", "/keys/upload", json={"device_keys": alice2.device_keys()})
    bob_since = changed_in_sync(bob, bob_since, alice.user_id)
    eventually(lambda: alice2.device_id in query(bob, alice.user_id)["device_keys"].get(alice.user_id, {}),
               "alice's new device at synapse")
    # And a new device of bob's reaches us.
    bob2 = login(synapse.url, bob.user_id, PASSWORD)
    bob2.call("POST", "/keys/upload", json={"device_keys": bob2.device_keys()})
    alice_since = changed_in_sync(alice, alice_since, bob.user_id)
    eventually(lambda: bob2.device_id in query(alice, bob.user_id)["device_keys"].get(bob.user_id, {}),
               "bob's new device here")
    # Deleting it is news here too.
    bob2.call("POST", "/logout", json={})
    alice_since = changed_in_sync(alice, alice_since, bob.user_id)
    eventually(lambda: bob2.device_id not in query(alice, bob.user_id)["device_keys"].get(bob.user_id, {}),
               "bob's deleted device gone here")

    # Cross-signing keys, both ways (m.signing_key_update).
    for device, password in ((alice, PASSWORD), (bob, PASSWORD)):
        master, master_pub, master_body = cross_signing_key(device, "master")
        _, _, ssk_body = cross_signing_key(device, "self_signing", (master, master_pub))
        upload = {"master_key": master_body, "self_signing_key": ssk_body}
        r = device.call("POST", "/keys/device_signing/upload", None, json=upload)
        if r.status_code == 401:
            upload["auth"] = {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": device.user_id},
                "password": password,
                "session": r.json()["session"],
            }
            r = device.call("POST", "/keys/device_signing/upload", json=upload)
        assert r.status_code == 200, r.text
        device.master_pub = master_pub
    eventually(
        lambda: query(alice, bob.user_id).get("master_keys", {}).get(bob.user_id, {}).get("keys")
        == {f"ed25519:{bob.master_pub}": bob.master_pub},
        "bob's master key here",
    )
    eventually(
        lambda: query(bob, alice.user_id).get("master_keys", {}).get(alice.user_id, {}).get("keys")
        == {f"ed25519:{alice.master_pub}": alice.master_pub},
        "alice's master key at synapse",
    )
