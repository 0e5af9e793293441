"""Raw-HTTP end-to-end encryption helpers: a device with its own ed25519
identity key (signedjson, as Synapse signs), signed device keys, one-time
keys and cross-signing keys. Works against any homeserver URL."""

import requests
import signedjson.key
import signedjson.sign

from conftest import unique

CS = "/_matrix/client/v3"


class Device:
    """A logged-in device with its own ed25519 identity key."""

    def __init__(self, url: str, user_id: str, token: str, device_id: str):
        self.url, self.user_id, self.token, self.device_id = url, user_id, token, device_id
        self.key = signedjson.key.generate_signing_key(device_id)
        self.public = signedjson.key.encode_verify_key_base64(self.key.verify_key)

    def call(self, method: str, path: str, expect: int | None = 200, **kwargs):
        headers = {"Authorization": f"Bearer {self.token}"}
        r = requests.request(method, self.url + CS + path, headers=headers, timeout=30, **kwargs)
        if expect is not None:
            assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        return r

    def device_keys(self, **override) -> dict:
        keys = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{self.device_id}": "curve" + self.device_id, f"ed25519:{self.device_id}": self.public},
            **override,
        }
        return signedjson.sign.sign_json(keys, self.user_id, self.key)

    def signed_key(self, key_id: str, fallback: bool = False) -> dict:
        key = {"key": f"otk-{key_id}"}
        if fallback:
            key["fallback"] = True
        return signedjson.sign.sign_json(key, self.user_id, self.key)

    def sync(self, since: str | None = None) -> dict:
        params = {"timeout": "0"}
        if since:
            params["since"] = since
        return self.call("GET", "/sync", params=params).json()


def new_user(server, name: str | None = None, password: str = "correct horse battery") -> Device:
    """A new account on our server (the conftest `server`)."""
    body = server.register(name or unique(), password)
    return Device(server.url, body["user_id"], body["access_token"], body["device_id"])


def login(url: str, user_id: str, password: str = "correct horse battery") -> Device:
    """A new device of an existing account, on any homeserver."""
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
    }
    r = requests.post(url + CS + "/login", json=body, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    return Device(url, user_id, body["access_token"], body["device_id"])


def another_device(server, device: Device, password: str = "correct horse battery") -> Device:
    return login(server.url, device.user_id, password)


def cross_signing_key(device: Device, usage: str, signer=None):
    key = signedjson.key.generate_signing_key(usage)
    public = signedjson.key.encode_verify_key_base64(key.verify_key)
    body = {"user_id": device.user_id, "usage": [usage], "keys": {f"ed25519:{public}": public}}
    if signer is not None:
        signing_key, signing_public = signer
        signing_key.version = signing_public
        body = signedjson.sign.sign_json(body, device.user_id, signing_key)
    return key, public, body
