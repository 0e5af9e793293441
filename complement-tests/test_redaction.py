"""Redactions: own events always, others' with the redact level; the content
is stripped as the room version says, and clients see why."""

from urllib.parse import quote

from conftest import unique

CS = "/_matrix/client/v3"


def test_redactions_in_v10_and_v11(server):
    for version in ["10", "11"]:
        alice = server.register(unique("alice"))
        bob = server.register(unique("bob"))
        room = server.request("POST", f"{CS}/createRoom", token=alice["access_token"], json={"preset": "public_chat", "room_version": version}).json()["room_id"]
        assert server.request("POST", f"{CS}/rooms/{quote(room)}/join", token=bob["access_token"], json={}).status_code == 200

        def send(user, txn, body):
            r = server.request("PUT", f"{CS}/rooms/{quote(room)}/send/m.room.message/{txn}", token=user["access_token"], json={"msgtype": "m.text", "body": body})
            return r.json()["event_id"]

        def redact(user, event_id, txn, reason=None):
            body = {"reason": reason} if reason else {}
            return server.request("PUT", f"{CS}/rooms/{quote(room)}/redact/{quote(event_id)}/{txn}", token=user["access_token"], json=body)

        def get(event_id):
            return server.request("GET", f"{CS}/rooms/{quote(room)}/event/{quote(event_id)}", token=alice["access_token"]).json()

        from_alice = send(alice, "a1", "secret")
        from_bob = send(bob, "b1", "oops")
        r = redact(bob, from_alice, "r1")
        assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
        assert get(from_alice)["content"]["body"] == "secret", "a refused redaction changes nothing"

        r = redact(bob, from_bob, "r2", reason="typo")
        assert r.status_code == 200, r.text
        redaction_id = r.json()["event_id"]
        # The same transaction gives the same redaction.
        assert redact(bob, from_bob, "r2", reason="typo").json()["event_id"] == redaction_id
        redacted = get(from_bob)
        assert redacted["content"] == {}
        assert redacted["unsigned"]["redacted_because"]["event_id"] == redaction_id
        redaction = get(redaction_id)
        assert redaction["content"]["reason"] == "typo"
        # Both places, whatever the version: v11 moved it into the content,
        # older clients read the top level.
        assert redaction["content"]["redacts"] == from_bob and redaction["redacts"] == from_bob

        # The admin may redact anyone's event.
        assert redact(alice, from_bob, "r3").status_code == 200
        assert redact(alice, "$nope", "r4").status_code == 404
