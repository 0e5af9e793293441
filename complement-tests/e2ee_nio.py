"""End-to-end encryption as matrix-nio (with its [e2e] extra, vodozemac)
does it: helpers and scenarios that run against any homeserver.

Every user carries its own homeserver URL, so the same scenario runs with
both users on one server or with Alice on server A and Bob on server B
(federation). Every nio device has its own crypto store (sqlite) in a
directory the caller gives.

The scenarios, each on a fresh encrypted DM between Alice and Bob:
  exchange        both verify the other's device, send, and decrypt the other's message
  new_device      Bob logs in again; Alice learns of the new device from
                  device_lists.changed and her next message's room key reaches it by to-device
  device_removal  Alice logs a second device out and Bob deletes his second
                  device (password UIA); each shows in the other's device_lists.changed,
                  the device is gone after /keys/query and gets no further room keys

Run against a real Synapse (or two, federated) with e2ee_against_synapse.py.
"""

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import nio
import requests

PASSWORD = "correct horse battery"
CS = "/_matrix/client/v3"
MEGOLM = "m.megolm.v1.aes-sha2"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@dataclass
class User:
    """An account on some homeserver (`homeserver` is its client-server base URL)."""

    homeserver: str
    user_id: str
    password: str = PASSWORD


def register_user(homeserver: str, localpart: str, password: str = PASSWORD) -> User:
    """Registers with the dummy stage (in a UIA session if the server asks for one).
    No device comes of it: every device of the scenarios is a password login."""
    body = {"username": localpart, "password": password, "auth": {"type": "m.login.dummy"},
            "inhibit_login": True}
    r = requests.post(homeserver + CS + "/register", json=body, timeout=30)
    if r.status_code == 401 and "session" in r.json():
        body["auth"]["session"] = r.json()["session"]
        r = requests.post(homeserver + CS + "/register", json=body, timeout=30)
    assert r.status_code == 200, f"register {localpart} on {homeserver}: {r.status_code} {r.text}"
    return User(homeserver, r.json()["user_id"], password)


class Device:
    """One logged-in nio device with E2EE on, and what its syncs have shown."""

    def __init__(self, user: User, store_dir: Path, name: str):
        self.user = user
        self.name = name
        store_dir.mkdir(parents=True, exist_ok=True)
        config = nio.AsyncClientConfig(encryption_enabled=True, store=nio.store.SqliteStore,
                                       request_timeout=30, max_timeouts=3)
        self.client = nio.AsyncClient(user.homeserver, user.user_id, store_path=str(store_dir), config=config)
        self.changed: set[str] = set()  # every user in device_lists.changed so far
        self.left: set[str] = set()
        self.to_device: list = []  # every to-device event (decrypted where nio could)
        self.events: dict[str, object] = {}  # every timeline event by id (decrypted where nio could)

    @property
    def device_id(self) -> str:
        return self.client.device_id

    @property
    def user_id(self) -> str:
        return self.client.user_id

    def __repr__(self):
        return f"{self.name} ({self.user_id} {self.device_id})"

    async def login(self) -> "Device":
        response = await self.client.login(self.user.password, device_name=self.name)
        assert isinstance(response, nio.LoginResponse), f"{self.name} login: {response}"
        assert self.client.olm is not None, "nio has no Olm machine: is matrix-nio[e2e] installed?"
        # Identity keys and one-time keys right away: /keys/upload.
        uploaded = await self.client.keys_upload()
        assert isinstance(uploaded, nio.KeysUploadResponse), f"{self} keys upload: {uploaded}"
        assert uploaded.signed_curve25519_count > 0, f"{self}: server counts no one-time keys: {uploaded}"
        assert self.client.olm_account_shared
        return self

    async def close(self):
        await self.client.close()

    @property
    def identity_keys(self) -> dict[str, str]:
        return self.client.olm.account.identity_keys

    async def step(self, timeout_ms: int = 500) -> nio.SyncResponse:
        """One round of what nio's sync_forever does: /sync, then the queued
        to-device messages, key upload, key query and key claim it calls for."""
        response = await self.client.sync(timeout=timeout_ms)
        assert isinstance(response, nio.SyncResponse), f"{self} sync: {response}"
        self.changed.update(response.device_list.changed)
        self.left.update(response.device_list.left)
        self.to_device.extend(response.to_device_events)
        for joined in response.rooms.join.values():
            self.events.update((e.event_id, e) for e in joined.timeline.events if getattr(e, "event_id", None))
        for sent in await self.client.send_to_device_messages():
            assert isinstance(sent, nio.ToDeviceResponse), f"{self} to-device: {sent}"
        if self.client.should_upload_keys:
            uploaded = await self.client.keys_upload()
            assert isinstance(uploaded, nio.KeysUploadResponse), f"{self} keys upload: {uploaded}"
        await self.query_keys()
        if self.client.should_claim_keys:
            claimed = await self.client.keys_claim(self.client.get_users_for_key_claiming())
            assert isinstance(claimed, nio.KeysClaimResponse), f"{self} keys claim: {claimed}"
        return response

    async def query_keys(self, *users: str, timeout: float = 10.0) -> None:
        """/keys/query for the users nio tracks as changed, plus `users`. A
        query with `failures` (a remote server that did not answer) is made
        again, as clients do, until it has none."""
        if users:
            self.client.olm.add_changed_users(set(users))
        deadline = time.monotonic() + timeout
        while self.client.should_query_keys:
            asked = set(self.client.users_for_key_query)
            queried = await self.client.keys_query()
            assert isinstance(queried, nio.KeysQueryResponse), f"{self} keys query: {queried}"
            if not queried.failures:
                return
            # (Synapse 1.163 sometimes fails its own device list resync of a
            # remote user with KeyError 'devices': a race, gone on the next try.)
            assert time.monotonic() < deadline, f"{self} keys query failures: {queried.failures}"
            self.client.olm.add_changed_users(asked)
            await asyncio.sleep(0.2)

    async def until(self, done, what: str, timeout: float = 30.0):
        """Steps until `done()` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            found = done()
            if found:
                return found
            assert time.monotonic() < deadline, f"{self}: timed out waiting for {what}"
            await self.step()

    def devices_of(self, user_id: str) -> dict[str, nio.crypto.OlmDevice]:
        """The devices nio's device store holds as active (not deleted) for `user_id`."""
        return {d.id: d for d in self.client.device_store.active_user_devices(user_id)}

    async def trust(self, other: "Device", timeout: float = 30.0) -> None:
        """Waits until /keys/query brings `other`'s device keys (as `other` holds
        them), then marks the device verified, as a completed verification would."""

        deadline = time.monotonic() + timeout
        while (device := self.devices_of(other.user_id).get(other.device_id)) is None:
            assert time.monotonic() < deadline, f"{self} never got the keys of {other}"
            await self.query_keys(other.user_id)
            if other.device_id not in self.devices_of(other.user_id):
                await self.step()
        assert device.ed25519 == other.identity_keys["ed25519"], f"{self}: wrong ed25519 key for {other}"
        assert device.curve25519 == other.identity_keys["curve25519"], f"{self}: wrong curve25519 key for {other}"
        self.client.verify_device(device)

    async def send_text(self, room: str, body: str) -> str:
        """room_send as nio does it in an encrypted room: joined members, key
        query, key claim, the room key to every device by to-device, then the
        m.room.encrypted event. Fails if a device of the room is not verified."""
        sent = await self.client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": body})
        assert isinstance(sent, nio.RoomSendResponse), f"{self} send: {sent}"
        return sent.event_id

    async def raw(self, method: str, path: str, body=None, token: str | None = None) -> tuple[int, dict]:
        """A request nio has no typed call for, over nio's transport: (status, json)."""
        data = json.dumps(body) if body is not None else None
        token = token or self.client.access_token
        response = await self.client.send(method, path, data, headers={"Authorization": f"Bearer {token}"})
        return response.status, await response.json()

    async def expect_decrypted(self, room: str, event_id: str, body: str, sender: "Device",
                               timeout: float = 30.0) -> nio.RoomMessageText:
        """Syncs until `event_id` comes down the room's timeline and decrypts it.
        The event must be m.room.encrypted (Megolm) on the server, decrypt to
        m.text `body` and be verified as sent by `sender`'s device. If the room
        key arrives by to-device after the event, the event is decrypted then."""
        deadline = time.monotonic() + timeout
        event = await self.until(lambda: self.events.get(event_id), f"event {event_id} in /sync", timeout)
        status, raw_event = await self.raw("GET", f"{CS}/rooms/{room}/event/{event_id}")
        assert status == 200, f"{self} GET event {event_id}: {status} {raw_event}"
        assert raw_event["type"] == "m.room.encrypted", raw_event
        assert raw_event["content"]["algorithm"] == MEGOLM, raw_event
        assert body not in json.dumps(raw_event), "the plaintext is on the server"

        while isinstance(event, nio.MegolmEvent):
            assert time.monotonic() < deadline, (
                f"{self}: no room key for {event_id} (session {event.session_id}); "
                f"to-device so far: {[type(e).__name__ for e in self.to_device]}")
            await self.step()
            try:
                event = self.client.decrypt_event(event)
            except nio.EncryptionError:
                pass
        assert isinstance(event, nio.RoomMessageText), f"{self}: {event_id} is {event!r}"
        assert event.body == body, f"{self}: {event_id} decrypted to {event.body!r}, not {body!r}"
        assert event.decrypted
        assert event.sender == sender.user_id
        assert event.sender_key == sender.identity_keys["curve25519"], f"{self}: {event_id} from another device"
        assert event.verified, f"{self}: {event_id} decrypted but not verified as {sender}'s"
        return event


async def encrypted_dm(alice: Device, bob: Device) -> str:
    """Alice creates an encrypted DM (trusted_private_chat, is_direct,
    m.room.encryption in the initial state) and invites Bob, who joins; both
    sync until each knows the room is encrypted and the other is in it, then
    each gets and verifies the other's device."""
    created = await alice.client.room_create(
        is_direct=True, preset=nio.RoomPreset.trusted_private_chat, invite=[bob.user_id],
        initial_state=[{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}],
    )
    assert isinstance(created, nio.RoomCreateResponse), f"{alice} createRoom: {created}"
    room = created.room_id
    await bob.until(lambda: room in bob.client.invited_rooms, "the invite")
    joined = await bob.client.join(room)
    assert isinstance(joined, nio.JoinResponse), f"{bob} join: {joined}"
    for me, other in ((alice, bob), (bob, alice)):
        await me.until(lambda: room in me.client.rooms and me.client.rooms[room].encrypted
                       and other.user_id in me.client.rooms[room].users
                       and not me.client.rooms[room].users[other.user_id].invited,
                       f"{other.user_id} in the encrypted room")
    await alice.trust(bob)
    await bob.trust(alice)
    return room


def run(coro_fn, *args, timeout: float = 180.0):
    """Runs one scenario with a global timeout (for callers outside asyncio)."""

    async def main():
        await asyncio.wait_for(coro_fn(*args), timeout)

    asyncio.run(main())


class Devices:
    """Opens devices under one store root and closes them all at the end."""

    def __init__(self, store_root: Path):
        self.root = Path(store_root)
        self.open: list[Device] = []

    async def login(self, user: User, name: str) -> Device:
        device = Device(user, self.root / unique(name), name)
        self.open.append(device)
        return await device.login()

    async def close(self):
        for device in self.open:
            await device.close()


# The scenarios. Each takes two registered users (on one server or on two)
# and a directory for the crypto stores.

async def scenario_exchange(alice_user: User, bob_user: User, store_root: Path) -> None:
    devices = Devices(store_root)
    try:
        alice = await devices.login(alice_user, "alice-phone")
        bob = await devices.login(bob_user, "bob-laptop")
        room = await encrypted_dm(alice, bob)

        first = await alice.send_text(room, "hello bob, this is secret")
        await bob.expect_decrypted(room, first, "hello bob, this is secret", alice)
        reply = await bob.send_text(room, "hello alice, so is this")
        await alice.expect_decrypted(room, reply, "hello alice, so is this", bob)
        # The same Megolm session goes on: no new room key is needed for the next one.
        second = await alice.send_text(room, "and one more")
        await bob.expect_decrypted(room, second, "and one more", alice)
    finally:
        await devices.close()


async def scenario_new_device(alice_user: User, bob_user: User, store_root: Path) -> None:
    devices = Devices(store_root)
    try:
        alice = await devices.login(alice_user, "alice-phone")
        bob = await devices.login(bob_user, "bob-laptop")
        room = await encrypted_dm(alice, bob)
        before = await alice.send_text(room, "before bob's second device")
        await bob.expect_decrypted(room, before, "before bob's second device", alice)

        alice.changed.clear()
        bob2 = await devices.login(bob_user, "bob-phone")
        # Alice shares a room with Bob, so his new device is in her device_lists.changed.
        await alice.until(lambda: bob.user_id in alice.changed, "bob in device_lists.changed")
        await alice.until(lambda: bob2.device_id in alice.devices_of(bob.user_id), "bob's new device after /keys/query")
        await alice.trust(bob2)
        await bob2.until(lambda: room in bob2.client.rooms and bob2.client.rooms[room].encrypted, "the room")
        await bob2.trust(alice)
        await bob2.trust(bob)
        await bob.trust(bob2)

        # Alice's next message gets a new room key, sent to both of Bob's devices.
        after = await alice.send_text(room, "to both of bob's devices")
        await bob2.expect_decrypted(room, after, "to both of bob's devices", alice)
        await bob.expect_decrypted(room, after, "to both of bob's devices", alice)
        # And the new device's own message (it claims one of Alice's one-time keys).
        from_new = await bob2.send_text(room, "from bob's phone")
        await alice.expect_decrypted(room, from_new, "from bob's phone", bob2)
        await bob.expect_decrypted(room, from_new, "from bob's phone", bob2)
    finally:
        await devices.close()


async def scenario_device_removal(alice_user: User, bob_user: User, store_root: Path) -> None:
    devices = Devices(store_root)
    try:
        alice = await devices.login(alice_user, "alice-phone")
        alice2 = await devices.login(alice_user, "alice-tablet")
        bob = await devices.login(bob_user, "bob-laptop")
        bob2 = await devices.login(bob_user, "bob-phone")
        room = await encrypted_dm(alice, bob)
        for me in (alice2, bob2):
            await me.until(lambda: room in me.client.rooms and me.client.rooms[room].encrypted, "the room")
        everyone = (alice, alice2, bob, bob2)
        for me in everyone:  # everyone verifies every other device
            for other in everyone:
                if other is not me:
                    await me.trust(other)
        first = await alice.send_text(room, "to all four devices")
        for device in (alice2, bob, bob2):
            await device.expect_decrypted(room, first, "to all four devices", alice)

        # Alice logs her tablet out: its token is dead, and Bob sees the change.
        bob.changed.clear()
        token = alice2.client.access_token
        logged_out = await alice2.client.logout()
        assert isinstance(logged_out, nio.LogoutResponse), f"{alice2} logout: {logged_out}"
        status, body = await alice2.raw("GET", f"{CS}/account/whoami", token=token)
        assert (status, body.get("errcode")) == (401, "M_UNKNOWN_TOKEN"), (status, body)
        await bob.until(lambda: alice.user_id in bob.changed, "alice in device_lists.changed")
        await bob.until(lambda: alice2.device_id not in bob.devices_of(alice.user_id), "alice's tablet gone")
        assert alice.device_id in bob.devices_of(alice.user_id)

        # Bob deletes his phone from his laptop, with his password (UIA).
        alice.changed.clear()
        asked = await bob.client.delete_devices([bob2.device_id])
        assert isinstance(asked, nio.DeleteDevicesAuthResponse), f"{bob} delete_devices without auth: {asked}"
        assert any(flow.get("stages") == ["m.login.password"] for flow in asked.flows), asked.flows
        auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": bob.user_id},
                "password": bob_user.password, "session": asked.session}
        deleted = await bob.client.delete_devices([bob2.device_id], auth)
        assert isinstance(deleted, nio.DeleteDevicesResponse), f"{bob} delete_devices: {deleted}"
        status, body = await bob2.raw("GET", f"{CS}/account/whoami")
        assert (status, body.get("errcode")) == (401, "M_UNKNOWN_TOKEN"), (status, body)
        listed = await bob.client.devices()
        assert isinstance(listed, nio.DevicesResponse), listed
        listed_ids = [d.id for d in listed.devices]
        assert bob.device_id in listed_ids and bob2.device_id not in listed_ids, listed_ids
        await alice.until(lambda: bob.user_id in alice.changed, "bob in device_lists.changed")
        await alice.until(lambda: bob2.device_id not in alice.devices_of(bob.user_id), "bob's phone gone")
        assert bob.device_id in alice.devices_of(bob.user_id)

        # The next room key goes to Bob's laptop only.
        last = await alice.send_text(room, "only bob's laptop")
        await bob.expect_decrypted(room, last, "only bob's laptop", alice)
        shared = alice.client.olm.outbound_group_sessions[room].users_shared_with
        assert (bob.user_id, bob.device_id) in shared, shared
        assert (bob.user_id, bob2.device_id) not in shared, shared
        reply = await bob.send_text(room, "got it")
        await alice.expect_decrypted(room, reply, "got it", bob)
        shared = bob.client.olm.outbound_group_sessions[room].users_shared_with
        assert (alice.user_id, alice2.device_id) not in shared, shared
    finally:
        await devices.close()


SCENARIOS = {
    "exchange": scenario_exchange,
    "new_device": scenario_new_device,
    "device_removal": scenario_device_removal,
}
