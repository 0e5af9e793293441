"""The accounts slice driven by matrix-nio, a real client SDK."""

import asyncio
import json

import nio

from conftest import unique

PASSWORD = "correct horse battery"


async def scenario(url: str, store: str) -> None:
    name = unique("nio")
    client = nio.AsyncClient(url, store_path=store)
    try:
        registered = await client.register(name, PASSWORD, device_name="nio register")
        assert isinstance(registered, nio.RegisterResponse), registered
        user_id = registered.user_id
        assert user_id == f"@{name}:localhost"

        # A second client logs in as the same user.
        phone = nio.AsyncClient(url, user_id, store_path=store)
        login = await phone.login(PASSWORD, device_name="nio phone")
        assert isinstance(login, nio.LoginResponse), login

        who = await phone.whoami()
        assert isinstance(who, nio.WhoamiResponse), who
        assert who.user_id == user_id and who.device_id == login.device_id

        set_name = await phone.set_displayname("Nio Tester")
        assert isinstance(set_name, nio.ProfileSetDisplayNameResponse), set_name
        got = await client.get_displayname(user_id)
        assert isinstance(got, nio.ProfileGetDisplayNameResponse), got
        assert got.displayname == "Nio Tester"

        devices = await phone.devices()
        assert isinstance(devices, nio.DevicesResponse), devices
        names = {d.id: d.display_name for d in devices.devices}
        assert names == {registered.device_id: "nio register", login.device_id: "nio phone"}, names

        # Deleting a device is user-interactive: first the flows, then the password.
        first = await phone.delete_devices([registered.device_id])
        assert isinstance(first, nio.DeleteDevicesAuthResponse), first
        auth = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user_id},
            "password": PASSWORD,
            "session": first.session,
        }
        deleted = await phone.delete_devices([registered.device_id], auth)
        assert isinstance(deleted, nio.DeleteDevicesResponse), deleted
        devices = await phone.devices()
        assert [d.id for d in devices.devices] == [login.device_id]
        # The deleted device's token is revoked.
        revoked = await client.whoami()
        assert isinstance(revoked, nio.WhoamiError) and revoked.status_code == "M_UNKNOWN_TOKEN", revoked

        # Account data: written over nio's HTTP transport, read back with its typed call.
        direct = {"@friend:localhost": ["!dm:localhost"]}
        path = f"/_matrix/client/v3/user/{user_id}/account_data/m.direct"
        put = await phone.send("PUT", path, json.dumps(direct), headers={"Authorization": f"Bearer {phone.access_token}"})
        assert put.status == 200, await put.text()
        rooms = await phone.list_direct_rooms()
        assert isinstance(rooms, nio.DirectRoomsResponse), rooms
        assert rooms.rooms == direct

        old_token = phone.access_token
        out = await phone.logout()
        assert isinstance(out, nio.LogoutResponse), out
        phone.access_token = old_token
        after = await phone.whoami()
        assert isinstance(after, nio.WhoamiError), after
        assert after.status_code == "M_UNKNOWN_TOKEN"
        await phone.close()
    finally:
        await client.close()


def test_nio_account_lifecycle(server, tmp_path):
    store = tmp_path / "nio-store"
    store.mkdir()
    asyncio.run(scenario(server.url, str(store)))
