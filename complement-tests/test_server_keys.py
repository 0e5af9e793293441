"""The key server: our signing key, verifiable the way a Synapse peer verifies it."""

import time

from signedjson.key import decode_verify_key_bytes
from signedjson.sign import verify_signed_json
from unpaddedbase64 import decode_base64


def fetch_and_verify(server) -> tuple[str, str]:
    r = server.request("GET", "/_matrix/key/v2/server")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["server_name"] == server.server_name
    assert body["valid_until_ts"] > time.time() * 1000 + 3600_000
    assert body["old_verify_keys"] == {}
    [(key_id, key)] = body["verify_keys"].items()
    assert key_id.startswith("ed25519:")
    version = key_id.split(":", 1)[1]
    verify_key = decode_verify_key_bytes(key_id, decode_base64(key["key"]))
    verify_key.version = version
    verify_signed_json(body, server.server_name, verify_key)  # raises when wrong
    return key_id, key["key"]


def test_key_server_response_is_self_signed_and_kept_across_restarts(make_server):
    server = make_server()
    first = fetch_and_verify(server)
    # The deprecated form with a key id answers the same.
    assert server.request("GET", f"/_matrix/key/v2/server/{first[0]}").json()["verify_keys"] == {first[0]: {"key": first[1]}}
    server.stop()
    server.start()
    assert fetch_and_verify(server) == first, "the signing key must survive a restart"


def test_tampered_response_does_not_verify(server):
    import pytest
    from signedjson.sign import SignatureVerifyException

    body = server.request("GET", "/_matrix/key/v2/server").json()
    [(key_id, key)] = body["verify_keys"].items()
    verify_key = decode_verify_key_bytes(key_id, decode_base64(key["key"]))
    body["valid_until_ts"] += 1
    with pytest.raises(SignatureVerifyException):
        verify_signed_json(body, server.server_name, verify_key)
