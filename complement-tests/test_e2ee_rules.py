"""End-to-end encryption's server rules, with raw HTTP and real ed25519
signatures (signedjson, as Synapse signs): what is refused, what is handed
out once, what is delivered once, which backed-up key wins."""

import signedjson.key
import signedjson.sign

from e2ee_raw import Device, another_device, cross_signing_key, new_user


def test_device_keys_must_be_the_devices_own_and_signed_by_it(server):
    alice = new_user(server)
    # Another user's id, another device's id: refused, nothing stored.
    r = alice.call("POST", "/keys/upload", 400, json={"device_keys": alice.device_keys(user_id="@mallory:localhost")})
    assert r.json()["errcode"] == "M_INVALID_PARAM"
    r = alice.call("POST", "/keys/upload", 400, json={"device_keys": alice.device_keys(device_id="OTHER")})
    assert r.json()["errcode"] == "M_INVALID_PARAM"
    # A signature by another key, or a tampered body after signing.
    forged = alice.device_keys()
    forged["keys"][f"curve25519:{alice.device_id}"] = "swapped"
    r = alice.call("POST", "/keys/upload", 400, json={"device_keys": forged})
    assert r.json()["errcode"] == "M_INVALID_SIGNATURE"
    query = {"device_keys": {alice.user_id: []}}
    assert alice.call("POST", "/keys/query", json=query).json()["device_keys"][alice.user_id] == {}

    alice.call("POST", "/keys/upload", json={"device_keys": alice.device_keys()})
    found = alice.call("POST", "/keys/query", json=query).json()["device_keys"][alice.user_id]
    assert found[alice.device_id]["keys"][f"ed25519:{alice.device_id}"] == alice.public
    assert signedjson.sign.verify_signed_json(found[alice.device_id], alice.user_id, signedjson.key.get_verify_key(alice.key)) is None


def test_one_time_keys_are_claimed_once_then_the_fallback_key(server):
    bob = new_user(server)
    alice = new_user(server)
    counts = bob.call(
        "POST",
        "/keys/upload",
        json={
            "device_keys": bob.device_keys(),
            "one_time_keys": {f"signed_curve25519:K{i}": bob.signed_key(f"K{i}") for i in range(2)},
            "fallback_keys": {"signed_curve25519:F1": bob.signed_key("F1", fallback=True)},
        },
    ).json()["one_time_key_counts"]
    assert counts["signed_curve25519"] == 2
    sync = bob.sync()
    assert sync["device_one_time_keys_count"]["signed_curve25519"] == 2
    assert sync["device_unused_fallback_key_types"] == ["signed_curve25519"]
    # The same key id with other content is refused.
    r = bob.call("POST", "/keys/upload", 400, json={"one_time_keys": {"signed_curve25519:K0": bob.signed_key("other")}})
    assert r.json()["errcode"] == "M_INVALID_PARAM"

    claim = {"one_time_keys": {bob.user_id: {bob.device_id: "signed_curve25519"}}}
    seen = []
    for _ in range(2):
        got = alice.call("POST", "/keys/claim", json=claim).json()["one_time_keys"][bob.user_id][bob.device_id]
        seen.extend(got)
    assert sorted(seen) == ["signed_curve25519:K0", "signed_curve25519:K1"]
    # The pool is empty: the fallback key, again and again.
    for _ in range(2):
        got = alice.call("POST", "/keys/claim", json=claim).json()["one_time_keys"][bob.user_id][bob.device_id]
        assert list(got) == ["signed_curve25519:F1"]
    sync = bob.sync()
    assert sync["device_one_time_keys_count"]["signed_curve25519"] == 0
    assert sync["device_unused_fallback_key_types"] == []
    # A new fallback key is unused again.
    bob.call("POST", "/keys/upload", json={"fallback_keys": {"signed_curve25519:F2": bob.signed_key("F2", fallback=True)}})
    assert bob.sync()["device_unused_fallback_key_types"] == ["signed_curve25519"]


def test_to_device_is_delivered_once_and_idempotent_per_transaction(server):
    alice = new_user(server)
    bob = new_user(server)
    bob2 = another_device(server, bob)
    first = bob.sync()
    first2 = bob2.sync()
    body = {"messages": {bob.user_id: {bob.device_id: {"n": 1}}}}
    alice.call("PUT", "/sendToDevice/m.test/txn1", json=body)
    # The same transaction again: nothing new.
    alice.call("PUT", "/sendToDevice/m.test/txn1", json=body)
    alice.call("PUT", "/sendToDevice/m.test/txn2", json={"messages": {bob.user_id: {"*": {"n": 2}}}})

    got = bob.sync(first["next_batch"])
    events = got["to_device"]["events"]
    assert [e["content"]["n"] for e in events] == [1, 2]
    assert all(e["sender"] == alice.user_id and e["type"] == "m.test" for e in events)
    # Not acknowledged yet: a retry with the old token gets them again.
    again = bob.sync(first["next_batch"])
    assert [e["content"]["n"] for e in again["to_device"]["events"]] == [1, 2]
    # Acknowledged by the next token: gone.
    assert bob.sync(again["next_batch"])["to_device"]["events"] == []
    # A message too large for a device queue is refused whole.
    r = alice.call("PUT", "/sendToDevice/m.test/big", 413,
                   json={"messages": {bob.user_id: {bob.device_id: {"x": "y" * 70_000}}}})
    assert r.json()["errcode"] == "M_TOO_LARGE"
    # `*` reached the other device too, only once.
    events2 = bob2.sync(first2["next_batch"])["to_device"]["events"]
    assert [e["content"]["n"] for e in events2] == [2]


def test_logout_deletes_the_devices_keys_and_tells_room_mates(server):
    alice = new_user(server)
    bob = new_user(server)
    bob2 = another_device(server, bob)
    bob2.call("POST", "/keys/upload", json={"device_keys": bob2.device_keys()})
    room = alice.call("POST", "/createRoom", json={"invite": [bob.user_id]}).json()["room_id"]
    bob.call("POST", f"/join/{room}", json={})
    token = alice.sync()["next_batch"]
    query = {"device_keys": {bob.user_id: []}}
    assert bob2.device_id in alice.call("POST", "/keys/query", json=query).json()["device_keys"][bob.user_id]

    # A new device name is news too (other servers show it from the update).
    bob2.call("PUT", f"/devices/{bob2.device_id}", json={"display_name": "bob's tablet"})
    renamed = alice.sync(token)
    assert bob.user_id in renamed["device_lists"]["changed"]
    seen = alice.call("POST", "/keys/query", json=query).json()["device_keys"][bob.user_id][bob2.device_id]
    assert seen["unsigned"]["device_display_name"] == "bob's tablet"
    token = renamed["next_batch"]

    bob2.call("POST", "/logout", json={})
    news = alice.sync(token)
    assert bob.user_id in news["device_lists"]["changed"]
    changes = alice.call("GET", "/keys/changes", params={"from": token, "to": news["next_batch"]}).json()
    assert bob.user_id in changes["changed"]
    assert bob2.device_id not in alice.call("POST", "/keys/query", json=query).json()["device_keys"][bob.user_id]

    # Leaving the only shared room: bob is in `left`.
    token = news["next_batch"]
    bob.call("POST", f"/rooms/{room}/leave", json={})
    assert bob.user_id in alice.sync(token)["device_lists"]["left"]


def test_cross_signing_upload_signatures_and_replacement_needs_auth(server):
    alice = new_user(server, password="pw-alice")
    alice.call("POST", "/keys/upload", json={"device_keys": alice.device_keys()})
    master, master_pub, master_body = cross_signing_key(alice, "master")
    ssk, ssk_pub, ssk_body = cross_signing_key(alice, "self_signing", (master, master_pub))
    usk, usk_pub, usk_body = cross_signing_key(alice, "user_signing", (master, master_pub))
    # A self-signing key the master key did not sign is refused.
    _, _, unsigned_ssk = cross_signing_key(alice, "self_signing")
    r = alice.call("POST", "/keys/device_signing/upload", 400, json={"master_key": master_body, "self_signing_key": unsigned_ssk})
    assert r.json()["errcode"] == "M_INVALID_SIGNATURE"
    # The first upload needs no auth (MSC3967).
    keys = {"master_key": master_body, "self_signing_key": ssk_body, "user_signing_key": usk_body}
    alice.call("POST", "/keys/device_signing/upload", json=keys)
    # The same keys again: still no auth.
    alice.call("POST", "/keys/device_signing/upload", json=keys)

    # Sign the device with the self-signing key; a bad signature fails.
    device_keys = alice.device_keys()
    ssk.version = ssk_pub
    signed = signedjson.sign.sign_json(dict(device_keys), alice.user_id, ssk)
    forged = dict(signed)
    forged["signatures"] = {alice.user_id: {f"ed25519:{ssk_pub}": "A" * 86}}
    r = alice.call("POST", "/keys/signatures/upload", json={alice.user_id: {alice.device_id: forged}})
    assert r.json()["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    r = alice.call("POST", "/keys/signatures/upload", json={alice.user_id: {alice.device_id: signed}})
    assert r.json()["failures"] == {}
    answer = alice.call("POST", "/keys/query", json={"device_keys": {alice.user_id: []}}).json()
    stored = answer["device_keys"][alice.user_id][alice.device_id]
    assert f"ed25519:{ssk_pub}" in stored["signatures"][alice.user_id]
    assert answer["master_keys"][alice.user_id]["keys"] == {f"ed25519:{master_pub}": master_pub}
    assert alice.user_id in answer["self_signing_keys"]
    assert alice.user_id in answer["user_signing_keys"]

    # Another user sees the public keys, never the user-signing key.
    bob = new_user(server)
    seen = bob.call("POST", "/keys/query", json={"device_keys": {alice.user_id: []}}).json()
    assert alice.user_id in seen["master_keys"] and alice.user_id not in seen["user_signing_keys"]

    # Replacing the keys asks for the password.
    new_master, new_master_pub, new_master_body = cross_signing_key(alice, "master")
    r = alice.call("POST", "/keys/device_signing/upload", 401, json={"master_key": new_master_body})
    session = r.json()["session"]
    assert any("m.login.password" in f["stages"] for f in r.json()["flows"])
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": "pw-alice",
        "session": session,
    }
    alice.call("POST", "/keys/device_signing/upload", json={"master_key": new_master_body, "auth": auth})
    seen = bob.call("POST", "/keys/query", json={"device_keys": {alice.user_id: []}}).json()
    assert seen["master_keys"][alice.user_id]["keys"] == {f"ed25519:{new_master_pub}": new_master_pub}


def test_key_backup_versions_and_the_better_key_wins(server):
    alice = new_user(server)
    assert alice.call("GET", "/room_keys/version", 404).json()["errcode"] == "M_NOT_FOUND"
    auth_data = {"public_key": "abc", "signatures": {}}
    algorithm = "m.megolm_backup.v1.curve25519-aes-sha2"
    v1 = alice.call("POST", "/room_keys/version", json={"algorithm": algorithm, "auth_data": auth_data}).json()["version"]
    v2 = alice.call("POST", "/room_keys/version", json={"algorithm": algorithm, "auth_data": auth_data}).json()["version"]
    info = alice.call("GET", "/room_keys/version").json()
    assert info["version"] == v2 and info["count"] == 0 and info["algorithm"] == algorithm

    def key(verified: bool, index: int, forwards: int, data: str) -> dict:
        return {
            "first_message_index": index,
            "forwarded_count": forwards,
            "is_verified": verified,
            "session_data": {"ciphertext": data, "ephemeral": "e", "mac": "m"},
        }

    path = "/room_keys/keys/!room:localhost/S1"
    # Only the latest version takes keys.
    r = alice.call("PUT", path, 403, params={"version": v1}, json=key(False, 5, 0, "a"))
    assert r.json()["errcode"] == "M_WRONG_ROOM_KEYS_VERSION" and r.json()["current_version"] == v2
    first = alice.call("PUT", path, params={"version": v2}, json=key(False, 5, 1, "a")).json()
    assert first["count"] == 1
    # A worse key (higher index) does not replace; a better one does.
    alice.call("PUT", path, params={"version": v2}, json=key(False, 7, 0, "worse"))
    assert alice.call("GET", path, params={"version": v2}).json()["session_data"]["ciphertext"] == "a"
    alice.call("PUT", path, params={"version": v2}, json=key(False, 5, 0, "fewer-forwards"))
    assert alice.call("GET", path, params={"version": v2}).json()["session_data"]["ciphertext"] == "fewer-forwards"
    alice.call("PUT", path, params={"version": v2}, json=key(True, 9, 9, "verified"))
    assert alice.call("GET", path, params={"version": v2}).json()["session_data"]["ciphertext"] == "verified"
    alice.call("PUT", path, params={"version": v2}, json=key(False, 0, 0, "unverified"))
    assert alice.call("GET", path, params={"version": v2}).json()["session_data"]["ciphertext"] == "verified"

    # The etag moves with changes; count stays 1 for one session.
    info = alice.call("GET", f"/room_keys/version/{v2}").json()
    assert info["count"] == 1 and info["etag"] != first["etag"]
    everything = alice.call("GET", "/room_keys/keys", params={"version": v2}).json()
    assert list(everything["rooms"]["!room:localhost"]["sessions"]) == ["S1"]
    deleted = alice.call("DELETE", "/room_keys/keys", params={"version": v2}).json()
    assert deleted["count"] == 0
    alice.call("GET", path, 404, params={"version": v2})
    # The version's algorithm stays; the body's version must match the path.
    alice.call("PUT", f"/room_keys/version/{v2}", 400, json={"algorithm": "other", "auth_data": auth_data})
    alice.call("PUT", f"/room_keys/version/{v2}", 400, json={"algorithm": algorithm, "auth_data": auth_data, "version": v1})
    alice.call("DELETE", f"/room_keys/version/{v2}")
    assert alice.call("GET", "/room_keys/version").json()["version"] == v1
    alice.call("GET", f"/room_keys/version/{v2}", 404)
    # A deleted version's number is never given again.
    v3 = alice.call("POST", "/room_keys/version", json={"algorithm": algorithm, "auth_data": auth_data}).json()["version"]
    assert int(v3) == int(v2) + 1


def test_dehydrated_device_receives_to_device_messages(server):
    alice = new_user(server)
    bob = new_user(server)
    assert server.request("GET", "/_matrix/client/versions").json()["unstable_features"]["org.matrix.msc3814"]
    base = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
    r = server.request("GET", base, token=alice.token)
    assert r.status_code == 404
    dehydrated = Device(server.url, alice.user_id, alice.token, "DEHYDRATED1")
    body = {
        "device_id": "DEHYDRATED1",
        "device_data": {"algorithm": "m.dehydration.v1.olm", "device_pickle": "opaque"},
        "initial_device_display_name": "Dehydrated",
        "device_keys": dehydrated.device_keys(),
    }
    r = server.request("PUT", base, token=alice.token, json=body)
    assert r.status_code == 200 and r.json()["device_id"] == "DEHYDRATED1", r.text
    assert server.request("GET", base, token=alice.token).json()["device_data"]["device_pickle"] == "opaque"
    keys = bob.call("POST", "/keys/query", json={"device_keys": {alice.user_id: []}}).json()
    assert "DEHYDRATED1" in keys["device_keys"][alice.user_id]

    bob.call("PUT", "/sendToDevice/m.room_key/t1", json={"messages": {alice.user_id: {"DEHYDRATED1": {"k": 1}}}})
    events = server.request("POST", f"{base}/DEHYDRATED1/events", token=alice.token, json={}).json()
    assert [e["content"] for e in events["events"]] == [{"k": 1}]
    after = server.request("POST", f"{base}/DEHYDRATED1/events", token=alice.token, json={"next_batch": events["next_batch"]}).json()
    # The last page has no next_batch (matrix-js-sdk pages until it is gone).
    assert after == {"events": []}
    # matrix-js-sdk's form: GET with `from`.
    bob.call("PUT", "/sendToDevice/m.room_key/t2", json={"messages": {alice.user_id: {"DEHYDRATED1": {"k": 2}}}})
    r = server.request("GET", f"{base}/DEHYDRATED1/events", token=alice.token, params={"from": events["next_batch"]})
    assert [e["content"] for e in r.json()["events"]] == [{"k": 2}], r.text
    # Pages already read are kept: a cut-off rehydration starts again.
    again = server.request("POST", f"{base}/DEHYDRATED1/events", token=alice.token, json={}).json()
    assert [e["content"] for e in again["events"]] == [{"k": 1}, {"k": 2}]
    # Not bob's dehydrated device: 403.
    r = server.request("GET", f"{base}/DEHYDRATED1/events", token=bob.token)
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN", r.text
    r = server.request("DELETE", base, token=alice.token)
    assert r.json()["device_id"] == "DEHYDRATED1"
    keys = bob.call("POST", "/keys/query", json={"device_keys": {alice.user_id: []}}).json()
    assert "DEHYDRATED1" not in keys["device_keys"][alice.user_id]
