"""Error cases answered exactly as the spec says, with raw HTTP so nothing is smoothed over."""

import re
import time

import requests

from conftest import unique

CS = "/_matrix/client/v3"


def assert_error(r: requests.Response, status: int, errcode: str) -> dict:
    assert r.status_code == status, f"{r.status_code} {r.text}"
    body = r.json()
    assert body["errcode"] == errcode, body
    assert isinstance(body.get("error"), str)
    return body


def test_unknown_endpoint_and_wrong_method(server):
    assert_error(server.request("GET", "/_matrix/client/v3/no/such/thing"), 404, "M_UNRECOGNIZED")
    assert_error(server.request("GET", "/nothing"), 404, "M_UNRECOGNIZED")
    # /login exists for GET and POST, not DELETE.
    assert_error(server.request("DELETE", f"{CS}/login"), 405, "M_UNRECOGNIZED")


def test_missing_and_unknown_tokens(server):
    assert_error(server.request("GET", f"{CS}/account/whoami"), 401, "M_MISSING_TOKEN")
    body = assert_error(server.request("GET", f"{CS}/account/whoami", token="nope"), 401, "M_UNKNOWN_TOKEN")
    assert not body.get("soft_logout")
    # The deprecated query parameter is still understood.
    r = server.request("GET", f"{CS}/account/whoami", params={"access_token": "nope"})
    assert_error(r, 401, "M_UNKNOWN_TOKEN")


def test_not_json_and_bad_json(server):
    r = server.request("POST", f"{CS}/login", data=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(r, 400, "M_NOT_JSON")
    r = server.request("POST", f"{CS}/login", json={"type": "m.login.password", "password": 12})
    assert_error(r, 400, "M_BAD_JSON")
    # A body without "type" once made the parser panic; it must be a clean 400.
    assert_error(server.request("POST", f"{CS}/login", json={"password": "x"}), 400, "M_BAD_JSON")
    assert_error(server.request("POST", f"{CS}/login", json=[1, 2]), 400, "M_BAD_JSON")


def test_too_large_body(make_server):
    server = make_server({"CONDUIT_MAX_REQUEST_SIZE": "4096"})
    r = server.request("POST", f"{CS}/login", json={"type": "m.login.password", "password": "x" * 10000})
    assert_error(r, 413, "M_TOO_LARGE")


def test_register_flows_and_username_errors(server):
    r = server.request("POST", f"{CS}/register", json={"username": unique(), "password": "pw"})
    assert r.status_code == 401
    body = r.json()
    assert body["flows"] == [{"stages": ["m.login.dummy"]}]
    assert body["session"]

    name = unique()
    server.register(name)
    r = server.request("POST", f"{CS}/register", json={"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}})
    assert_error(r, 400, "M_USER_IN_USE")
    for bad in ["UPPER", "white space", "_reserved", "12345", "é"]:
        r = server.request("POST", f"{CS}/register", json={"username": bad, "password": "pw", "auth": {"type": "m.login.dummy"}})
        assert_error(r, 400, "M_INVALID_USERNAME")
    r = server.request("GET", f"{CS}/register/available", params={"username": name})
    assert_error(r, 400, "M_USER_IN_USE")
    r = server.request("GET", f"{CS}/register/available", params={"username": unique()})
    assert r.status_code == 200 and r.json() == {"available": True}
    r = server.request("GET", f"{CS}/register/available", params={"username": "Bad Name"})
    assert_error(r, 400, "M_INVALID_USERNAME")


def test_failed_registration_writes_nothing(server):
    name = unique()
    r = server.request("POST", f"{CS}/register", json={"username": name, "auth": {"type": "m.login.dummy"}})
    assert_error(r, 400, "M_MISSING_PARAM")
    r = server.request("GET", f"{CS}/register/available", params={"username": name})
    assert r.status_code == 200, "a failed registration must not reserve the name"


def test_guest_registration_refused_unless_enabled(server, make_server):
    r = server.request("POST", f"{CS}/register", params={"kind": "guest"}, json={})
    assert_error(r, 403, "M_GUEST_ACCESS_FORBIDDEN")

    guests = make_server({"CONDUIT_ALLOW_GUEST_REGISTRATION": "true"})
    r = guests.request("POST", f"{CS}/register", params={"kind": "guest"}, json={})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    who = guests.request("GET", f"{CS}/account/whoami", token=token).json()
    assert who["is_guest"] is True
    # Guests may not change passwords, see devices or account data, or
    # change any profile field but their display name.
    r = guests.request("POST", f"{CS}/account/password", token=token, json={"new_password": "x"})
    assert_error(r, 403, "M_GUEST_ACCESS_FORBIDDEN")
    assert_error(guests.request("GET", f"{CS}/devices", token=token), 403, "M_GUEST_ACCESS_FORBIDDEN")
    me = who["user_id"]
    r = guests.request("PUT", f"{CS}/user/{me}/account_data/x.y", token=token, json={})
    assert_error(r, 403, "M_GUEST_ACCESS_FORBIDDEN")
    r = guests.request("PUT", f"{CS}/profile/{me}/avatar_url", token=token, json={"avatar_url": "mxc://x/y"})
    assert_error(r, 403, "M_GUEST_ACCESS_FORBIDDEN")
    r = guests.request("PUT", f"{CS}/profile/{me}/displayname", token=token, json={"displayname": "Guest"})
    assert r.status_code == 200, r.text


def test_registration_token_stage(make_server):
    server = make_server({"CONDUIT_REGISTRATION_REQUIRES_TOKEN": "true", "CONDUIT_REGISTRATION_TOKEN": "s3cret"})
    name = unique()
    r = server.request("POST", f"{CS}/register", json={"username": name, "password": "pw"})
    assert r.status_code == 401
    body = r.json()
    assert body["flows"] == [{"stages": ["m.login.registration_token"]}]
    session = body["session"]

    wrong = {"type": "m.login.registration_token", "token": "guess", "session": session}
    r = server.request("POST", f"{CS}/register", json={"username": name, "password": "pw", "auth": wrong})
    assert r.status_code == 401
    assert r.json()["errcode"] == "M_FORBIDDEN"
    assert r.json().get("completed", []) == []

    dummy = {"type": "m.login.dummy", "session": session}
    r = server.request("POST", f"{CS}/register", json={"username": name, "password": "pw", "auth": dummy})
    assert r.status_code == 401, "a stage that is not offered must not pass"

    right = {"type": "m.login.registration_token", "token": "s3cret", "session": session}
    # Later steps may leave out what the first request said.
    r = server.request("POST", f"{CS}/register", json={"auth": right})
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == f"@{name}:localhost"
    assert server.login(name, "pw").status_code == 200


def test_registration_closed(make_server):
    server = make_server({"CONDUIT_ALLOW_REGISTRATION": "false"})
    r = server.request("POST", f"{CS}/register", json={"username": unique(), "password": "pw", "auth": {"type": "m.login.dummy"}})
    assert_error(r, 403, "M_FORBIDDEN")
    # Requiring a token when no valid one exists is closed too, not a flow
    # nobody can finish. (A first start has the admin invite: use it up.)
    server = make_server({"CONDUIT_REGISTRATION_REQUIRES_TOKEN": "true"})
    r = server.request("POST", f"{CS}/register", json={"username": unique(), "password": "pw"})
    assert r.status_code == 401 and r.json()["flows"] == [{"stages": ["m.login.registration_token"]}]
    token = re.findall(r"with registration token ([A-Za-z0-9]+); single use", server.log())[-1]
    auth = {"type": "m.login.registration_token", "token": token, "session": r.json()["session"]}
    assert server.request("POST", f"{CS}/register", json={"username": unique(), "password": "pw", "auth": auth}).status_code == 200
    r = server.request("POST", f"{CS}/register", json={"username": unique(), "password": "pw"})
    assert_error(r, 403, "M_FORBIDDEN")


def test_unknown_uiaa_session(server):
    auth = {"type": "m.login.dummy", "session": "made-up"}
    r = server.request("POST", f"{CS}/register", json={"username": unique(), "password": "pw", "auth": auth})
    assert r.status_code == 400
    assert r.json()["errcode"] == "M_UNKNOWN"


def test_login_errors(server):
    name = unique()
    server.register(name)
    assert_error(server.login(name, "wrong"), 403, "M_FORBIDDEN")
    assert_error(server.login(unique()), 403, "M_FORBIDDEN")
    assert_error(server.login("@someone:elsewhere.org"), 403, "M_FORBIDDEN")
    r = server.request("POST", f"{CS}/login", json={"type": "m.login.fancy"})
    assert_error(r, 400, "M_UNKNOWN")
    # Login flows are honest: only passwords so far.
    flows = server.request("GET", f"{CS}/login").json()["flows"]
    assert [f["type"] for f in flows] == ["m.login.password"]


def test_legacy_user_field_and_full_user_id_login(server):
    name = unique()
    server.register(name)
    r = server.request("POST", f"{CS}/login", json={"type": "m.login.password", "user": name, "password": "correct horse battery"})
    assert r.status_code == 200, r.text
    r = server.login(f"@{name}:localhost")
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == f"@{name}:localhost"


def test_login_with_existing_device_id_replaces_its_token(server):
    name = unique()
    server.register(name)
    first = server.login(name, device_id="PHONE").json()
    second = server.login(name, device_id="PHONE").json()
    assert first["device_id"] == second["device_id"] == "PHONE"
    assert_error(server.request("GET", f"{CS}/account/whoami", token=first["access_token"]), 401, "M_UNKNOWN_TOKEN")
    assert server.request("GET", f"{CS}/account/whoami", token=second["access_token"]).status_code == 200


def test_refresh_tokens_rotate_and_expire(make_server):
    server = make_server({"CONDUIT_REFRESHABLE_ACCESS_TOKEN_LIFETIME": "1"})
    name = unique()
    server.register(name)
    login = server.login(name, refresh_token=True).json()
    assert login["expires_in_ms"] == 1000
    assert login["refresh_token"]
    time.sleep(1.2)
    body = assert_error(server.request("GET", f"{CS}/account/whoami", token=login["access_token"]), 401, "M_UNKNOWN_TOKEN")
    assert body["soft_logout"] is True

    r = server.request("POST", f"{CS}/refresh", json={"refresh_token": login["refresh_token"]})
    assert r.status_code == 200, r.text
    lost = r.json()
    assert lost["access_token"] != login["access_token"]
    # A client that lost that answer may trade the same refresh token again...
    r = server.request("POST", f"{CS}/refresh", json={"refresh_token": login["refresh_token"]})
    assert r.status_code == 200, r.text
    fresh = r.json()
    # ...which replaces the lost pair.
    assert_error(server.request("GET", f"{CS}/account/whoami", token=lost["access_token"]), 401, "M_UNKNOWN_TOKEN")
    assert server.request("GET", f"{CS}/account/whoami", token=fresh["access_token"]).status_code == 200
    # Once the new access token is used, the old refresh token is spent.
    r = server.request("POST", f"{CS}/refresh", json={"refresh_token": login["refresh_token"]})
    assert_error(r, 401, "M_UNKNOWN_TOKEN")
    # Tokens without refresh do not expire.
    plain = server.login(name).json()
    assert "expires_in_ms" not in plain and "refresh_token" not in plain


def test_password_change_needs_uia_and_logs_out_other_devices(server):
    name = unique()
    server.register(name)
    a = server.login(name).json()
    b = server.login(name).json()
    r = server.request("POST", f"{CS}/account/password", token=a["access_token"], json={"new_password": "new pw"})
    assert r.status_code == 401 and r.json()["flows"] == [{"stages": ["m.login.password"]}]
    session = r.json()["session"]
    bad = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": "wrong", "session": session}
    r = server.request("POST", f"{CS}/account/password", token=a["access_token"], json={"new_password": "new pw", "auth": bad})
    assert r.status_code == 401 and r.json()["errcode"] == "M_FORBIDDEN"
    assert server.login(name).status_code == 200, "a failed change must change nothing"

    good = dict(bad, password="correct horse battery")
    r = server.request("POST", f"{CS}/account/password", token=a["access_token"], json={"new_password": "new pw", "auth": good})
    assert r.status_code == 200, r.text
    assert_error(server.login(name), 403, "M_FORBIDDEN")
    assert server.login(name, "new pw").status_code == 200
    assert server.request("GET", f"{CS}/account/whoami", token=a["access_token"]).status_code == 200
    assert_error(server.request("GET", f"{CS}/account/whoami", token=b["access_token"]), 401, "M_UNKNOWN_TOKEN")


def test_uia_cannot_authenticate_as_someone_else(server):
    alice, bob = unique("alice"), unique("bob")
    server.register(bob)
    token = server.register(alice)["access_token"]
    auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": bob}, "password": "correct horse battery"}
    r = server.request("POST", f"{CS}/account/deactivate", token=token, json={"auth": auth})
    assert r.status_code == 401 and r.json()["errcode"] == "M_FORBIDDEN"
    assert server.login(alice).status_code == 200


def test_deactivate(server):
    name = unique()
    token = server.register(name)["access_token"]
    auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": "correct horse battery"}
    r = server.request("POST", f"{CS}/account/deactivate", token=token, json={"auth": auth})
    assert r.status_code == 200, r.text
    assert r.json()["id_server_unbind_result"] == "success"
    assert_error(server.request("GET", f"{CS}/account/whoami", token=token), 401, "M_UNKNOWN_TOKEN")
    # The password is wiped: a deactivated account answers like a wrong
    # password, so probing cannot tell it from one that never existed.
    assert_error(server.login(name), 403, "M_FORBIDDEN")
    r = server.request("GET", f"{CS}/register/available", params={"username": name})
    assert_error(r, 400, "M_USER_IN_USE")
    assert_error(server.request("GET", f"{CS}/profile/@{name}:localhost"), 404, "M_NOT_FOUND")


def test_devices_errors_and_uia(server):
    name = unique()
    token = server.register(name)["access_token"]
    other = server.login(name, initial_device_display_name="Laptop").json()
    assert_error(server.request("GET", f"{CS}/devices/NOPE", token=token), 404, "M_NOT_FOUND")
    assert_error(server.request("PUT", f"{CS}/devices/NOPE", token=token, json={"display_name": "x"}), 404, "M_NOT_FOUND")
    r = server.request("DELETE", f"{CS}/devices/{other['device_id']}", token=token, json={})
    assert r.status_code == 401 and "session" in r.json()
    # Still there after the unauthenticated attempt.
    assert server.request("GET", f"{CS}/devices/{other['device_id']}", token=token).json()["display_name"] == "Laptop"
    # Renaming without a name keeps the name.
    assert server.request("PUT", f"{CS}/devices/{other['device_id']}", token=token, json={}).status_code == 200
    assert server.request("GET", f"{CS}/devices/{other['device_id']}", token=token).json()["display_name"] == "Laptop"
    auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": "correct horse battery", "session": r.json()["session"]}
    # A completed auth whose operation fails (unknown device) may be retried.
    r = server.request("DELETE", f"{CS}/devices/NOPE", token=token, json={"auth": auth})
    assert_error(r, 404, "M_NOT_FOUND")
    r = server.request("DELETE", f"{CS}/devices/{other['device_id']}", token=token, json={"auth": auth})
    assert r.status_code == 200, r.text
    # Once the operation succeeded, the session is spent.
    r = server.request("DELETE", f"{CS}/devices/{other['device_id']}", token=token, json={"auth": auth})
    assert r.status_code == 400 and r.json()["errcode"] == "M_UNKNOWN"
    assert_error(server.request("GET", f"{CS}/account/whoami", token=other["access_token"]), 401, "M_UNKNOWN_TOKEN")


def test_account_data_rules(server):
    alice = server.register(unique("alice"))
    bob = server.register(unique("bob"))
    path = f"{CS}/user/{bob['user_id']}/account_data/org.example"
    assert_error(server.request("PUT", path, token=alice["access_token"], json={"a": 1}), 403, "M_FORBIDDEN")
    assert_error(server.request("GET", path, token=alice["access_token"]), 403, "M_FORBIDDEN")
    assert_error(server.request("GET", path, token=bob["access_token"]), 404, "M_NOT_FOUND")
    own = f"{CS}/user/{alice['user_id']}/account_data/m.push_rules"
    assert_error(server.request("PUT", own, token=alice["access_token"], json={}), 405, "M_BAD_JSON")
    room = f"{CS}/user/{alice['user_id']}/rooms/!room:localhost/account_data/m.tag"
    assert server.request("PUT", room, token=alice["access_token"], json={"tags": {}}).status_code == 200
    assert server.request("GET", room, token=alice["access_token"]).json() == {"tags": {}}
    bad_room = f"{CS}/user/{alice['user_id']}/rooms/not-a-room/account_data/m.tag"
    assert_error(server.request("PUT", bad_room, token=alice["access_token"], json={}), 400, "M_INVALID_PARAM")


def test_profile_rules(server):
    alice = server.register(unique("alice"))
    bob = server.register(unique("bob"))
    r = server.request("PUT", f"{CS}/profile/{bob['user_id']}/displayname", token=alice["access_token"], json={"displayname": "x"})
    assert_error(r, 403, "M_FORBIDDEN")
    assert_error(server.request("GET", f"{CS}/profile/@nobody:localhost"), 404, "M_NOT_FOUND")
    assert_error(server.request("GET", f"{CS}/profile/not-a-user-id"), 400, "M_INVALID_PARAM")
    # Custom fields (v1.16): namespaced keys, kept even when empty; size limits.
    me = alice["user_id"]
    r = server.request("PUT", f"{CS}/profile/{me}/org.example.pronouns", token=alice["access_token"], json={"org.example.pronouns": ""})
    assert r.status_code == 200, r.text
    assert server.request("GET", f"{CS}/profile/{me}/org.example.pronouns").json() == {"org.example.pronouns": ""}
    r = server.request("PUT", f"{CS}/profile/{me}/NotNamespaced", token=alice["access_token"], json={"NotNamespaced": "x"})
    assert r.status_code == 400
    long_key = "org.example." + "k" * 250
    r = server.request("PUT", f"{CS}/profile/{me}/{long_key}", token=alice["access_token"], json={long_key: "x"})
    assert_error(r, 400, "M_KEY_TOO_LARGE")
    r = server.request("PUT", f"{CS}/profile/{me}/org.example.big", token=alice["access_token"], json={"org.example.big": "x" * 70000})
    assert_error(r, 400, "M_PROFILE_TOO_LARGE")
    # New accounts start with their localpart as display name.
    r = server.request("GET", f"{CS}/profile/{bob['user_id']}/displayname")
    assert r.json() == {"displayname": bob["user_id"][1:].split(":")[0]}


def test_push_rules(server):
    token = server.register(unique())["access_token"]
    rules = server.request("GET", f"{CS}/pushrules/", token=token).json()["global"]
    assert any(r["rule_id"] == ".m.rule.master" for r in rules["override"])
    base = f"{CS}/pushrules/global/room/!abc:localhost"
    assert_error(server.request("GET", base, token=token), 404, "M_NOT_FOUND")
    assert server.request("PUT", base, token=token, json={"actions": ["notify"]}).status_code == 200
    assert server.request("GET", base, token=token).json()["actions"] == ["notify"]
    assert server.request("PUT", base + "/enabled", token=token, json={"enabled": False}).status_code == 200
    assert server.request("GET", base + "/enabled", token=token).json() == {"enabled": False}
    assert server.request("PUT", base + "/actions", token=token, json={"actions": []}).status_code == 200
    assert server.request("GET", base + "/actions", token=token).json() == {"actions": []}
    assert server.request("DELETE", base, token=token).status_code == 200
    assert_error(server.request("DELETE", base, token=token), 404, "M_NOT_FOUND")
    # Server-default rules can be toggled but not removed or shadowed.
    master = f"{CS}/pushrules/global/override/.m.rule.master"
    assert server.request("PUT", master + "/enabled", token=token, json={"enabled": True}).status_code == 200
    assert server.request("GET", master + "/enabled", token=token).json() == {"enabled": True}
    assert_error(server.request("DELETE", master, token=token), 400, "M_INVALID_PARAM")
    r = server.request("PUT", f"{CS}/pushrules/global/override/.mine", token=token, json={"actions": [], "conditions": []})
    assert_error(r, 400, "M_INVALID_PARAM")
    r = server.request("PUT", base, token=token, params={"before": "nope"}, json={"actions": []})
    assert_error(r, 400, "M_UNKNOWN")


def test_filters(server):
    alice = server.register(unique())
    path = f"{CS}/user/{alice['user_id']}/filter"
    f = {"room": {"timeline": {"limit": 10}}}
    r = server.request("POST", path, token=alice["access_token"], json=f)
    assert r.status_code == 200, r.text
    fid = r.json()["filter_id"]
    got = server.request("GET", f"{path}/{fid}", token=alice["access_token"]).json()
    assert got["room"]["timeline"]["limit"] == 10
    assert_error(server.request("GET", f"{path}/nope", token=alice["access_token"]), 404, "M_NOT_FOUND")
    bob = server.register(unique())
    assert_error(server.request("GET", f"{path}/{fid}", token=bob["access_token"]), 403, "M_FORBIDDEN")


def test_cors(server):
    r = requests.options(
        server.url + f"{CS}/login",
        headers={"Origin": "https://app.element.io", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"},
        timeout=10,
    )
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()
    r = server.request("GET", "/_matrix/client/versions", headers={"Origin": "https://app.element.io"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"


def test_discovery(server):
    versions = server.request("GET", "/_matrix/client/versions").json()
    assert "v1.1" in versions["versions"]
    wk = server.request("GET", "/.well-known/matrix/client").json()
    assert wk["m.homeserver"]["base_url"].startswith("http://127.0.0.1:")
    assert_error(server.request("GET", "/.well-known/matrix/server"), 404, "M_NOT_FOUND")
    token = server.register(unique())["access_token"]
    caps = server.request("GET", f"{CS}/capabilities", token=token).json()["capabilities"]
    # Absent means enabled per spec (ruma leaves defaults out); false must be explicit.
    assert caps.get("m.change_password", {"enabled": True}) == {"enabled": True}
    assert caps["m.3pid_changes"] == {"enabled": False}
    # The room versions createRoom makes, v11 by default.
    assert caps["m.room_versions"] == {"default": "11", "available": {"10": "stable", "11": "stable", "12": "stable"}}
    assert server.request("GET", f"{CS}/account/3pid", token=token).json() == {"threepids": []}


def test_one_log_line_per_request_without_tokens(server):
    server.request("GET", f"{CS}/account/whoami", params={"access_token": "secret-token-value"})
    log = server.log()
    lines = [line for line in log.splitlines() if "conduit::request" in line and "/account/whoami" in line]
    assert lines, log
    assert "GET /_matrix/client/v3/account/whoami 401" in lines[-1]
    assert "ms" in lines[-1].split(" 401 ")[-1], "the time taken is logged"
    assert "secret-token-value" not in log, "tokens in query strings must never reach the log"


def test_password_change_and_deactivation_without_a_token(server):
    """The spec lets a user who lost every session change the password or
    deactivate with the password alone: the password stage says who they are."""
    name = unique()
    token = server.register(name)["access_token"]
    r = server.request("POST", f"{CS}/account/password", json={"new_password": "fresh"})
    assert r.status_code == 401 and r.json()["flows"] == [{"stages": ["m.login.password"]}]
    auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": "correct horse battery", "session": r.json()["session"]}
    r = server.request("POST", f"{CS}/account/password", json={"new_password": "fresh", "auth": auth})
    assert r.status_code == 200, r.text
    # Every device is logged out: no token said which one to keep.
    assert_error(server.request("GET", f"{CS}/account/whoami", token=token), 401, "M_UNKNOWN_TOKEN")
    assert server.login(name, "fresh").status_code == 200
    wrong = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": "nope"}
    r = server.request("POST", f"{CS}/account/deactivate", json={"auth": wrong})
    assert r.status_code == 401 and r.json()["errcode"] == "M_FORBIDDEN"
    right = dict(wrong, password="fresh")
    assert server.request("POST", f"{CS}/account/deactivate", json={"auth": right}).status_code == 200
    assert_error(server.login(name, "fresh"), 403, "M_FORBIDDEN")
