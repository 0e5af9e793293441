"""Single sign-on against a real OpenID provider (npm oidc-provider on
loopback), driven in headless Chromium through the whole flow: redirect,
provider login, username pick, "Continue to <app>?", back to the app with a
login token, `POST /login`. Plus the refusals: a tampered state, another
browser, a replayed or expired login token, bad redirect URLs, claims that
are not allowed, and the UIA `m.login.sso` stage."""

import re
import time
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from conftest import ARTIFACTS, free_port
from sso_peers import CLIENT_REDIRECT, browser_login, configure_sso, login_path, start_oidc_provider, token_login

ACCOUNTS = {
    "alice": {"sub": "u-1001", "preferred_username": "alice", "name": "Alice Liddell", "groups": ["matrix"]},
    "sam1": {"sub": "u-2001", "preferred_username": "Sam", "name": "Sam One", "groups": ["matrix"]},
    "sam2": {"sub": "u-2002", "preferred_username": "Sam", "name": "Sam Two", "groups": ["matrix"]},
    "outsider": {"sub": "u-3001", "preferred_username": "outsider", "name": "Not In Group", "groups": ["other"]},
}


def oidc_server(make_server, request, providers: list[tuple[str, str]], extra: str = ""):
    """A server whose providers (id, extra TOML keys) all use one oidc-provider."""
    server = make_server(start=False)
    op_port = free_port()
    callbacks = [f"{server.url}/_conduit/sso/callback/{idp}" for idp, _ in providers]
    op = start_oidc_provider(op_port, "matrix", "s3cret", callbacks, ACCOUNTS,
                             ARTIFACTS / f"{request.node.name}-oidc.log")
    request.addfinalizer(op.stop)
    tables = "".join(
        f'[[global.sso.providers]]\nid = "{idp}"\nname = "Example ID {idp}"\nkind = "oidc"\n'
        f'issuer = "{op.issuer}"\nclient_id = "matrix"\nclient_secret = "s3cret"\n{keys}\n'
        for idp, keys in providers
    )
    configure_sso(server, f"[global.sso]\n{extra}\n{tables}")
    return server.start(), op


@pytest.fixture
def sso(make_server, request):
    server, _ = oidc_server(make_server, request, [("example", "")])
    return server


def test_login_lists_the_provider_and_token_login(sso):
    flows = sso.request("GET", "/_matrix/client/v3/login").json()["flows"]
    types = [f["type"] for f in flows]
    assert types == ["m.login.password", "m.login.sso", "m.login.token"]
    sso_flow = flows[1]
    assert sso_flow["identity_providers"] == [{"id": "example", "name": "Example ID example"}]


def test_full_flow_in_chromium_then_same_user_again(sso):
    seen = browser_login(sso, login_path("example"), "alice", "sso-first")
    assert seen["form"] == {"prefilled": "alice", "error": None}, "a new identity picks a username"
    assert seen["confirm"]["title"] == "Continue to http://client.invalid/app?"
    assert seen["confirm"]["userId"] == "@alice:localhost"
    # Back at the app, its own query kept, with the token added.
    query = parse_qs(urlparse(seen["redirectedTo"]).query)
    assert query["x"] == ["1"] and query["loginToken"] == [seen["loginToken"]]

    r = token_login(sso, seen["loginToken"])
    assert r.status_code == 200, r.text
    login = r.json()
    assert login["user_id"] == "@alice:localhost"
    whoami = sso.request("GET", "/_matrix/client/v3/account/whoami", token=login["access_token"])
    assert whoami.json()["user_id"] == "@alice:localhost"
    profile = sso.request("GET", "/_matrix/client/v3/profile/@alice:localhost").json()
    assert profile["displayname"] == "Alice Liddell", "the provider's name was imported"

    # The token was used: a replay is refused.
    replay = token_login(sso, seen["loginToken"])
    assert replay.status_code == 403 and replay.json()["errcode"] == "M_FORBIDDEN"

    # The second login maps to the same user, without the username form.
    again = browser_login(sso, login_path("example"), "alice", "sso-second")
    assert again["form"] is None
    assert again["confirm"]["userId"] == "@alice:localhost"
    r = token_login(sso, again["loginToken"])
    assert r.status_code == 200 and r.json()["user_id"] == "@alice:localhost"
    assert r.json()["device_id"] != login["device_id"]


def test_same_preferred_username_asks_the_second_for_another(sso):
    first = browser_login(sso, login_path("example"), "sam1", "sso-sam1")
    assert first["form"]["prefilled"] == "sam", "lower-cased from the claim"
    assert first["confirm"]["userId"] == "@sam:localhost"

    second = browser_login(sso, login_path("example"), "sam2", "sso-sam2", pick="samuel")
    assert "“sam” is not available" in second["form"]["error"]
    assert second["form"]["prefilled"] == "sam2", "a free variant is offered"
    assert second["confirm"]["userId"] == "@samuel:localhost"
    assert token_login(sso, second["loginToken"]).json()["user_id"] == "@samuel:localhost"


def start_flow(server, browser: requests.Session) -> dict:
    """Starts a login with plain HTTP; returns the provider's authorization query."""
    r = browser.get(server.url + login_path("example"), allow_redirects=False)
    assert r.status_code == 302, r.text
    assert "conduit_sso_browser" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    query = {k: v[0] for k, v in parse_qs(urlparse(r.headers["location"]).query).items()}
    assert query["response_type"] == "code" and query["code_challenge_method"] == "S256"
    assert query["nonce"] and query["state"]
    return query


def test_tampered_state_and_another_browser_fail_with_a_page(sso):
    browser = requests.Session()
    query = start_flow(sso, browser)
    callback = sso.url + "/_conduit/sso/callback/example"

    r = browser.get(callback, params={"state": query["state"] + "x", "code": "c"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
    assert "unknown or has expired" in r.text

    # The right state from a browser that did not start the flow.
    r = requests.get(callback, params={"state": query["state"], "code": "c"})
    assert r.status_code == 403 and "started in another browser" in r.text
    # ...and the state is spent.
    r = browser.get(callback, params={"state": query["state"], "code": "c"})
    assert r.status_code == 400

    # The provider refused (the person pressed cancel).
    query = start_flow(sso, browser)
    r = browser.get(callback, params={"state": query["state"], "error": "access_denied",
                                      "error_description": "<b>denied</b>"})
    assert r.status_code == 403 and "did not sign you in: &lt;b&gt;denied&lt;/b&gt;" in r.text

    # A code claiming to come from another issuer (RFC 9207 mix-up) is not redeemed.
    query = start_flow(sso, browser)
    r = browser.get(callback, params={"state": query["state"], "code": "c", "iss": "https://evil.example"})
    assert r.status_code == 502 and "callback from issuer https://evil.example" in sso.log()

    # A forged code is refused by the provider; the page says so, no stack trace.
    query = start_flow(sso, browser)
    r = browser.get(callback, params={"state": query["state"], "code": "forged"})
    assert r.status_code == 502 and "did not answer as expected" in r.text


def test_bad_redirects_and_unknown_provider(sso):
    r = sso.request("GET", "/_matrix/client/v3/login/sso/redirect/example", allow_redirects=False)
    assert r.status_code == 400 and r.json()["errcode"] == "M_MISSING_PARAM"
    r = sso.request("GET", login_path("example", "javascript:alert(1)"), allow_redirects=False)
    assert r.status_code == 400 and "invalid return address" in r.text
    r = sso.request("GET", login_path("nope"), allow_redirects=False)
    assert r.status_code == 404 and "no such sign-in provider" in r.text
    # With one provider the generic redirect goes straight to it.
    r = sso.request("GET", login_path(), allow_redirects=False)
    assert r.status_code == 302 and r.headers["location"].startswith("http://127.0.0.1:")


def test_invalid_login_tokens_are_refused(sso):
    for token in ["", "nope", "x" * 2000]:
        r = token_login(sso, token)
        assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN", r.text


def test_expired_login_token(make_server, request):
    server, _ = oidc_server(make_server, request, [("example", "")], extra="login_token_lifetime = 1")
    seen = browser_login(server, login_path("example"), "alice", "sso-expiry")
    time.sleep(1.5)
    r = token_login(server, seen["loginToken"])
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"


def test_picker_allowed_claims_and_no_registration(make_server, request):
    server, _ = oidc_server(make_server, request, [
        ("staff", 'scopes = ["openid", "profile", "groups"]\nallowed_claims = { groups = "matrix" }'),
        ("closed", "allow_registration = false"),
    ])
    # Several providers: a picker page linking each.
    r = server.request("GET", login_path())
    assert r.status_code == 200
    assert re.findall(r'id="idp-(\w+)"', r.text) == ["staff", "closed"]

    seen = browser_login(server, login_path("staff"), "alice", "sso-staff")
    assert seen["confirm"]["userId"] == "@alice:localhost"
    with pytest.raises(AssertionError, match="not allowed to use this server"):
        browser_login(server, login_path("staff"), "outsider", "sso-outsider")
    with pytest.raises(AssertionError, match="does not create accounts"):
        browser_login(server, login_path("closed"), "sam1", "sso-closed")
    assert "@outsider:localhost" not in server.log()


def test_sso_only_user_deletes_a_device_through_the_sso_stage(sso):
    seen = browser_login(sso, login_path("example"), "alice", "sso-uia-login")
    login = token_login(sso, seen["loginToken"]).json()
    device = f"/_matrix/client/v3/devices/{login['device_id']}"

    r = sso.request("DELETE", device, token=login["access_token"], json={})
    assert r.status_code == 401
    challenge = r.json()
    assert challenge["flows"] == [{"stages": ["m.login.sso"]}], "no password stage without a password"
    session = challenge["session"]

    # The page says what is being approved.
    page = sso.request("GET", f"/_matrix/client/v3/auth/m.login.sso/fallback/web?session={session}")
    assert 'id="purpose">remove a device from your account<' in page.text

    # Without the stage done, the session alone is not enough.
    r = sso.request("DELETE", device, token=login["access_token"], json={"auth": {"session": session}})
    assert r.status_code == 401

    done = browser_login(sso, f"/_matrix/client/v3/auth/m.login.sso/fallback/web?session={session}",
                         "alice", "sso-uia", click="#idp-example")
    assert "Now we know it is you" in done["done"]

    # Clients may name the stage when they come back; that passes too.
    r = sso.request("DELETE", device, token=login["access_token"],
                    json={"auth": {"type": "m.login.sso", "session": session}})
    assert r.status_code == 200, r.text
    r = sso.request("GET", "/_matrix/client/v3/account/whoami", token=login["access_token"])
    assert r.status_code == 401, "the device and its token are gone"

    r = sso.request("GET", "/_matrix/client/v3/auth/m.login.sso/fallback/web?session=unknown")
    assert r.status_code == 400 and "unknown or has expired" in r.text


def test_another_identity_cannot_pass_the_stage(sso):
    for who in ["alice", "sam1"]:
        browser_login(sso, login_path("example"), who, f"sso-uia-{who}")
    seen = browser_login(sso, login_path("example"), "alice", "sso-uia-alice2")
    login = token_login(sso, seen["loginToken"]).json()
    r = sso.request("DELETE", f"/_matrix/client/v3/devices/{login['device_id']}",
                    token=login["access_token"], json={})
    session = r.json()["session"]
    with pytest.raises(AssertionError, match="not the one linked to @alice:localhost"):
        browser_login(sso, f"/_matrix/client/v3/auth/m.login.sso/fallback/web?session={session}",
                      "sam1", "sso-uia-wrong", click="#idp-example")


def test_password_login_off(make_server, request):
    server, _ = oidc_server(make_server, request, [("example", "")], extra="password_login = false")
    types = [f["type"] for f in server.request("GET", "/_matrix/client/v3/login").json()["flows"]]
    assert types == ["m.login.sso", "m.login.token"]
    r = server.login("alice")
    assert r.status_code == 400 and "single sign-on" in r.json()["error"]
    r = server.request("POST", "/_matrix/client/v3/register",
                       json={"username": "pw", "password": "a password", "auth": {"type": "m.login.dummy"}})
    assert r.status_code == 403 and "single sign-on only" in r.json()["error"]
    # SSO still creates accounts and logs in.
    seen = browser_login(server, login_path("example"), "alice", "sso-nopassword")
    assert token_login(server, seen["loginToken"]).status_code == 200


def test_sign_in_starts_are_limited_per_address(sso):
    statuses = [sso.request("GET", login_path("example"), allow_redirects=False).status_code for _ in range(35)]
    assert statuses[:30] == [302] * 30
    assert statuses[-1] == 429
