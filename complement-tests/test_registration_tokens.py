"""Registration tokens: the first-start admin invite, the Synapse-compatible
admin API, the `m.login.registration_token` stage with uses reserved when
the stage passes and counted when the account exists, validity, expiry,
and 50 registrations racing for one single-use token."""

import re
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest

from conftest import unique

CS = "/_matrix/client/v3"
ADMIN = "/_synapse/admin/v1"
VALIDITY = "/_matrix/client/v1/register/m.login.registration_token/validity"
PASSWORD = "correct horse battery"


def first_admin_token(server) -> str:
    """The single-use admin token the server logs on a first start."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # The log file may hold earlier runs of the same test: the last one.
        found = re.findall(r"with registration token ([A-Za-z0-9]+); single use", server.log())
        if found:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError("no first-start invite in the log:\n" + server.log())


def register_with_token(server, token, username=None, password=PASSWORD):
    """The raw UIA dance: ask for the flows, then pass the token stage.
    With no valid token left, registration is closed at once (403)."""
    body = {"username": username or unique("u"), "password": password}
    first = server.request("POST", f"{CS}/register", json=body)
    if first.status_code == 403:
        return first
    assert first.status_code == 401, first.text
    assert first.json()["flows"] == [{"stages": ["m.login.registration_token"]}]
    session = first.json()["session"]
    return server.request("POST", f"{CS}/register", json={**body, "auth": {"type": "m.login.registration_token", "token": token, "session": session}})


def refused(response) -> bool:
    """A registration refused for its token: a UIA error, or closed."""
    return response.status_code in (401, 403) and response.json().get("errcode") == "M_FORBIDDEN"


def valid(server, token) -> bool:
    r = server.request("GET", VALIDITY, params={"token": token})
    assert r.status_code == 200, r.text
    return r.json()["valid"]


@pytest.fixture
def admin(make_server):
    """A server that needs tokens to register, and its first (admin) account."""
    server = make_server({"CONDUIT_REGISTRATION_REQUIRES_TOKEN": "true", "CONDUIT_UIAA_SESSION_TIMEOUT": "2"})
    token = first_admin_token(server)
    assert valid(server, token)
    r = register_with_token(server, token, username="boss")
    assert r.status_code == 200, r.text
    assert not valid(server, token), "the invite is single use"
    return server, r.json()["access_token"]


def new_token(server, admin_token, **body):
    r = server.request("POST", f"{ADMIN}/registration_tokens/new", token=admin_token, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_first_start_logs_an_invite_link(make_server):
    """The first-start invite is also a link whose page makes the admin."""
    server = make_server({"CONDUIT_REGISTRATION_REQUIRES_TOKEN": "true"})
    token = first_admin_token(server)
    link = re.findall(r"open (\S+) to create the first account", server.log())[-1]
    assert link == f"{server.url}/_conduit/invite/{token}"
    r = server.request("POST", link.removeprefix(server.url), data={"username": "chief", "password": PASSWORD, "confirm": PASSWORD})
    assert r.status_code == 200, r.text
    login = server.login("chief", PASSWORD).json()
    assert server.request("GET", f"{ADMIN}/registration_tokens", token=login["access_token"]).status_code == 200
    assert len(server.request("GET", f"{CS}/joined_rooms", token=login["access_token"]).json()["joined_rooms"]) == 1


def test_first_account_is_admin_and_admin_tools_can_log_in(admin):
    server, boss = admin
    # Open to anyone, as Synapse's is.
    assert server.request("GET", f"{ADMIN}/server_version").json()["server_version"]
    me = server.request("GET", "/_synapse/admin/v2/users/@boss:localhost", token=boss).json()
    assert me["admin"] is True and me["name"] == "@boss:localhost" and me["deactivated"] is False
    r = server.request("GET", "/_synapse/admin/v2/users/@nobody:localhost", token=boss)
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    # A restart does not print a new invite once an account exists.
    printed = server.log().count("with registration token")
    server.stop()
    server.start()
    assert server.log().count("with registration token") == printed


def test_single_use_multi_use_expired_and_deleted_tokens(admin):
    server, boss = admin
    once = new_token(server, boss, uses_allowed=1)
    assert set(once) == {"token", "uses_allowed", "pending", "completed", "expiry_time"}
    assert (once["uses_allowed"], once["pending"], once["completed"], once["expiry_time"]) == (1, 0, 0, None)
    assert len(once["token"]) == 16
    assert valid(server, once["token"])
    assert register_with_token(server, once["token"]).status_code == 200
    assert not valid(server, once["token"])
    assert refused(register_with_token(server, once["token"]))
    shown = server.request("GET", f"{ADMIN}/registration_tokens/{once['token']}", token=boss).json()
    assert (shown["pending"], shown["completed"]) == (0, 1)

    three = new_token(server, boss, token="three-uses", uses_allowed=3)
    results = [register_with_token(server, three["token"]) for _ in range(4)]
    assert [r.status_code for r in results[:3]] == [200, 200, 200] and refused(results[3])

    soon = new_token(server, boss, uses_allowed=None, expiry_time=int(time.time() * 1000) + 1500)
    assert valid(server, soon["token"])
    time.sleep(1.7)
    assert not valid(server, soon["token"])
    assert refused(register_with_token(server, soon["token"]))

    gone = new_token(server, boss, length=8)
    assert len(gone["token"]) == 8
    assert server.request("DELETE", f"{ADMIN}/registration_tokens/{gone['token']}", token=boss).json() == {}
    assert not valid(server, gone["token"])
    assert refused(register_with_token(server, gone["token"]))
    assert not valid(server, "never-made")

    # Listing, with the valid filter; updating.
    listed = server.request("GET", f"{ADMIN}/registration_tokens", token=boss).json()["registration_tokens"]
    assert {t["token"] for t in listed} >= {once["token"], "three-uses", soon["token"]}
    still_valid = server.request("GET", f"{ADMIN}/registration_tokens", token=boss, params={"valid": "true"}).json()["registration_tokens"]
    assert once["token"] not in {t["token"] for t in still_valid}
    invalid = server.request("GET", f"{ADMIN}/registration_tokens", token=boss, params={"valid": "false"}).json()["registration_tokens"]
    assert {once["token"], soon["token"], "three-uses"} <= {t["token"] for t in invalid}
    more = server.request("PUT", f"{ADMIN}/registration_tokens/three-uses", token=boss, json={"uses_allowed": 4}).json()
    assert (more["uses_allowed"], more["completed"]) == (4, 3)
    assert register_with_token(server, "three-uses").status_code == 200


def test_a_use_is_reserved_by_the_stage_and_released_when_the_session_expires(admin):
    server, boss = admin
    token = new_token(server, boss, uses_allowed=1)["token"]
    # The stage passes, then account creation fails (no password): the use
    # stays reserved for that session...
    r = register_with_token(server, token, password=None)
    assert r.status_code == 400 and r.json()["errcode"] == "M_MISSING_PARAM", r.text
    shown = server.request("GET", f"{ADMIN}/registration_tokens/{token}", token=boss).json()
    assert (shown["pending"], shown["completed"]) == (1, 0)
    assert not valid(server, token)
    assert refused(register_with_token(server, token))
    # (and the session holding it may still finish: here it does not)
    # ...until the session expires (2 s here): the use was never consumed.
    time.sleep(2.3)
    assert valid(server, token)
    assert register_with_token(server, token).status_code == 200
    shown = server.request("GET", f"{ADMIN}/registration_tokens/{token}", token=boss).json()
    assert (shown["pending"], shown["completed"]) == (0, 1)


def test_fifty_registrations_race_for_one_single_use_token(admin):
    server, boss = admin
    token = new_token(server, boss, uses_allowed=1)["token"]
    names = [unique("racer") for _ in range(50)]
    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(lambda name: register_with_token(server, token, username=name), names))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 1, statuses
    assert all(refused(r) for r in responses if r.status_code != 200)
    created = [n for n in names if server.request("GET", f"{CS}/register/available", params={"username": n}).status_code != 200]
    assert len(created) == 1
    shown = server.request("GET", f"{ADMIN}/registration_tokens/{token}", token=boss).json()
    assert (shown["pending"], shown["completed"]) == (0, 1)


def test_admin_api_refuses_non_admins_and_bad_input(admin):
    server, boss = admin
    token = new_token(server, boss)["token"]
    user = register_with_token(server, token).json()["access_token"]
    routes = [
        ("GET", f"{ADMIN}/registration_tokens"),
        ("POST", f"{ADMIN}/registration_tokens/new"),
        ("GET", f"{ADMIN}/registration_tokens/{token}"),
        ("PUT", f"{ADMIN}/registration_tokens/{token}"),
        ("DELETE", f"{ADMIN}/registration_tokens/{token}"),
        ("GET", "/_synapse/admin/v2/users/@boss:localhost"),
    ]
    for method, path in routes:
        r = server.request(method, path, token=user, json={})
        assert (r.status_code, r.json()["errcode"]) == (403, "M_FORBIDDEN"), (method, path)
        r = server.request(method, path, json={})
        assert (r.status_code, r.json()["errcode"]) == (401, "M_MISSING_TOKEN"), (method, path)

    for method in ("GET", "PUT", "DELETE"):
        r = server.request(method, f"{ADMIN}/registration_tokens/nope", token=boss, json={})
        assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND"), method
    r = server.request("POST", f"{ADMIN}/registration_tokens/new", token=boss, data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    bad_bodies = [
        {"token": "has space"},
        {"token": "x" * 65},
        {"length": 0},
        {"length": 65},
        {"uses_allowed": -1},
        {"uses_allowed": "3"},
        {"expiry_time": 1},
        {"token": token},
    ]
    for body in bad_bodies:
        r = server.request("POST", f"{ADMIN}/registration_tokens/new", token=boss, json=body)
        assert (r.status_code, r.json()["errcode"]) == (400, "M_INVALID_PARAM"), body
    r = server.request("GET", f"{ADMIN}/registration_tokens", token=boss, params={"valid": "maybe"})
    assert r.status_code == 400


def test_the_session_holding_the_use_can_finish_later(admin):
    """A registration that failed after the token stage keeps its
    reservation: retrying in the same session succeeds, nobody else can
    take the use meanwhile."""
    server, boss = admin
    token = new_token(server, boss, uses_allowed=1)["token"]
    name = unique("late")
    first = server.request("POST", f"{CS}/register", json={"username": name})
    session = first.json()["session"]
    auth = {"type": "m.login.registration_token", "token": token, "session": session}
    r = server.request("POST", f"{CS}/register", json={"username": name, "auth": auth})
    assert r.json()["errcode"] == "M_MISSING_PARAM"
    assert refused(register_with_token(server, token))
    r = server.request("POST", f"{CS}/register", json={"username": name, "password": PASSWORD, "auth": {"session": session, "type": "m.login.registration_token", "token": token}})
    assert r.status_code == 200, r.text


def test_one_session_makes_one_account(admin):
    """Several requests finishing the same UIA session at once (each with
    another username) make one account between them, with or without a
    token use left."""
    server, boss = admin
    token = new_token(server, boss, uses_allowed=5)["token"]
    first = server.request("POST", f"{CS}/register", json={"username": unique("s")})
    session = first.json()["session"]
    auth = {"type": "m.login.registration_token", "token": token, "session": session}
    names = [unique("same") for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda n: server.request("POST", f"{CS}/register", json={"username": n, "password": PASSWORD, "auth": auth}), names))
    assert [r.status_code for r in responses].count(200) == 1, [r.text for r in responses]
    shown = server.request("GET", f"{ADMIN}/registration_tokens/{token}", token=boss).json()
    assert shown["completed"] == 1
