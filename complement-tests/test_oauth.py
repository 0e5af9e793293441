"""The OAuth 2.0 API (Matrix 1.15): server metadata, dynamic client
registration, the authorization code flow with PKCE on our sign-in pages
(password, sign-up with an invite link, a Mastodon instance upstream),
refresh with rotation and revocation; and each refusal. The browser flow
runs once in headless Chromium (js/oauth_flow.mjs), matrix-rust-sdk's own
OAuth login once (sdk-client)."""

import base64
import hashlib
import html
import json
import re
import secrets
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
import requests

from conftest import ARTIFACTS
from sso_peers import FakeMastodon, configure_sso
from test_admin_cli import admin
from test_js_sdk import NODE

HERE = Path(__file__).resolve().parent
CS = "/_matrix/client/v3"
CLIENT_URI = "https://client.example/"
REDIRECT = "https://client.example/cb?app=1"
SCOPE_DEVICE = "urn:matrix:client:device:"


def metadata(server) -> dict:
    r = server.request("GET", "/_matrix/client/v1/auth_metadata")
    assert r.status_code == 200, r.text
    return r.json()


def endpoint(server, name: str) -> str:
    return urlparse(metadata(server)[name]).path


def register_client(server, **fields) -> requests.Response:
    body = {"client_uri": CLIENT_URI, "redirect_uris": [REDIRECT], "client_name": "Test App",
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "token_endpoint_auth_method": "none", **fields}
    body = {k: v for k, v in body.items() if v is not None}
    return server.request("POST", endpoint(server, "registration_endpoint"), json=body)


def client_id(server, **fields) -> str:
    r = register_client(server, **fields)
    assert r.status_code == 201, r.text
    return r.json()["client_id"]


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_path(server, client: str, challenge: str, device: str = "OAUTHDEV01", redirect: str = REDIRECT,
                   **extra) -> str:
    params = {"response_type": "code", "client_id": client, "redirect_uri": redirect,
              "scope": f"urn:matrix:client:api:* {SCOPE_DEVICE}{device}", "state": "the-state",
              "code_challenge": challenge, "code_challenge_method": "S256", **extra}
    params = {k: v for k, v in params.items() if v is not None}
    return endpoint(server, "authorization_endpoint") + "?" + urlencode(params)


def authorization_of(page: str) -> str:
    return re.search(r'name="authorization" value="([^"]+)"', page).group(1)


def page_error(page: str) -> str | None:
    found = re.search(r'id="error">([^<]+)<', page)
    return found and html.unescape(found.group(1))


def sign_in(server, path: str, username: str, password: str = "correct horse battery") -> requests.Response:
    """The sign-in page's form, sent from the browser that opened it; the
    answer (a 303 to the app on success)."""
    browser = requests.Session()
    page = browser.get(server.url + path)
    assert page.status_code == 200, page.text
    return browser.post(server.url + "/_conduit/oauth/login", allow_redirects=False,
                        data={"authorization": authorization_of(page.text), "username": username,
                              "password": password})


def code_of(response: requests.Response, redirect: str = REDIRECT) -> str:
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(redirect), location
    query = parse_qs(urlparse(location).query)
    assert query["state"] == ["the-state"] and query["app"] == ["1"], "the app's own query is kept"
    return query["code"][0]


def token_request(server, **form) -> requests.Response:
    return server.request("POST", endpoint(server, "token_endpoint"), data=form)


def exchange(server, client: str, code: str, verifier: str, redirect: str = REDIRECT) -> requests.Response:
    return token_request(server, grant_type="authorization_code", code=code, redirect_uri=redirect,
                         client_id=client, code_verifier=verifier)


def whoami(server, token: str) -> requests.Response:
    return server.request("GET", f"{CS}/account/whoami", token=token)


def test_metadata_on_both_paths(server):
    meta = metadata(server)
    base = server.url
    assert meta["issuer"] == base + "/"
    for key in ["authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint"]:
        assert meta[key].startswith(base + "/_conduit/oauth/"), key
    assert meta["response_types_supported"] == ["code"]
    assert set(meta["grant_types_supported"]) == {"authorization_code", "refresh_token"}
    assert set(meta["response_modes_supported"]) == {"query", "fragment"}
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["prompt_values_supported"] == ["create"], "registration is open here"
    # matrix-rust-sdk asks the MSC2965 path of servers below v1.15.
    unstable = server.request("GET", "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata")
    assert unstable.status_code == 200 and unstable.json() == meta


def test_client_registration_follows_the_spec(server):
    r = register_client(server)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["client_id"] and body["token_endpoint_auth_method"] == "none"
    assert body["redirect_uris"] == [REDIRECT] and body["application_type"] == "web"
    # What matrix-rust-sdk registers: a native app with a loopback redirect;
    # unknown grant types and localized names are dropped, not refused.
    r = register_client(server, application_type="native", redirect_uris=["http://127.0.0.1/", "example.client:/cb"],
                        grant_types=["authorization_code", "refresh_token",
                                     "urn:ietf:params:oauth:grant-type:device_code"],
                        **{"client_name#fr": "Appli"})
    assert r.status_code == 201, r.text
    assert r.json()["grant_types"] == ["authorization_code", "refresh_token"] and "client_name#fr" not in r.json()

    refused = [
        ({"client_uri": "http://client.example/"}, "invalid_client_metadata"),
        ({"client_uri": None}, "invalid_client_metadata"),
        ({"logo_uri": "https://elsewhere.example/logo.png"}, "invalid_client_metadata"),
        ({"token_endpoint_auth_method": "client_secret_basic"}, "invalid_client_metadata"),
        ({"grant_types": ["refresh_token"]}, "invalid_client_metadata"),
        ({"redirect_uris": ["http://client.example/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://evil.example/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://client.example/cb#x"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["http://127.0.0.1/"]}, "invalid_redirect_uri"),  # loopback is for native apps
        ({"redirect_uris": []}, "invalid_redirect_uri"),
        ({"application_type": "native", "redirect_uris": ["example.other:/cb"]}, "invalid_redirect_uri"),
        ({"application_type": "native", "redirect_uris": ["example.client://cb"]}, "invalid_redirect_uri"),
    ]
    for fields, error in refused:
        r = register_client(server, **fields)
        assert r.status_code == 400 and r.json()["error"] == error, (fields, r.text)
    r = server.request("POST", endpoint(server, "registration_endpoint"), data="not json")
    assert r.status_code == 400 and r.json()["error"] == "invalid_client_metadata"


def test_password_flow_refresh_and_revoke(server):
    server.register("alice")
    client = client_id(server)
    verifier, challenge = pkce()
    page = server.request("GET", authorize_path(server, client, challenge))
    assert page.status_code == 200 and "Test App" in page.text and "client.example" in page.text
    assert "<script" not in page.text
    # The form may lead back to the app: browsers apply form-action to the redirect.
    assert "form-action 'self' https://client.example" in page.headers["content-security-policy"]

    code = code_of(sign_in(server, authorize_path(server, client, challenge), "alice"))
    r = exchange(server, client, code, verifier)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    tokens = r.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] > 0 and tokens["refresh_token"]
    assert tokens["scope"] == f"urn:matrix:client:api:* {SCOPE_DEVICE}OAUTHDEV01"
    me = whoami(server, tokens["access_token"]).json()
    assert me == {"user_id": "@alice:localhost", "device_id": "OAUTHDEV01"}
    # The token works on every endpoint: a room, a message, a sync.
    room = server.request("POST", f"{CS}/createRoom", token=tokens["access_token"], json={}).json()["room_id"]
    assert server.request("PUT", f"{CS}/rooms/{room}/send/m.room.message/t1", token=tokens["access_token"],
                          json={"msgtype": "m.text", "body": "hi"}).status_code == 200
    assert server.request("GET", f"{CS}/sync", token=tokens["access_token"]).status_code == 200
    device = server.request("GET", f"{CS}/devices/OAUTHDEV01", token=tokens["access_token"]).json()
    assert device["display_name"] == "Test App"

    # Refresh rotates both tokens; the old refresh token works until the new
    # access token is used (a lost answer can be asked again), then not.
    r = token_request(server, grant_type="refresh_token", refresh_token=tokens["refresh_token"], client_id=client)
    assert r.status_code == 200, r.text
    fresh = r.json()
    assert fresh["refresh_token"] != tokens["refresh_token"] and fresh["access_token"] != tokens["access_token"]
    assert whoami(server, tokens["access_token"]).json()["errcode"] == "M_UNKNOWN_TOKEN"
    assert whoami(server, fresh["access_token"]).status_code == 200
    r = token_request(server, grant_type="refresh_token", refresh_token=tokens["refresh_token"], client_id=client)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # Another client cannot use this one's refresh token.
    other = client_id(server)
    r = token_request(server, grant_type="refresh_token", refresh_token=fresh["refresh_token"], client_id=other)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"

    # Revoking the access token ends the session: both tokens and the device.
    revoke = endpoint(server, "revocation_endpoint")
    r = server.request("POST", revoke, data={"token": fresh["access_token"], "token_type_hint": "access_token",
                                            "client_id": client})
    assert r.status_code == 200
    assert whoami(server, fresh["access_token"]).status_code == 401
    r = token_request(server, grant_type="refresh_token", refresh_token=fresh["refresh_token"], client_id=client)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    login = server.login("alice").json()
    devices = server.request("GET", f"{CS}/devices", token=login["access_token"]).json()["devices"]
    assert "OAUTHDEV01" not in [d["device_id"] for d in devices]
    # Revoking again (or any unknown token) is fine, as RFC 7009 says.
    assert server.request("POST", revoke, data={"token": fresh["access_token"]}).status_code == 200
    r = server.request("POST", revoke, data={})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_authorization_refusals(server):
    client = client_id(server)
    verifier, challenge = pkce()
    # Unknown client or unregistered redirect: a page, never a redirect.
    for path in [authorize_path(server, "nobody", challenge),
                 authorize_path(server, client, challenge, redirect="https://client.example/other"),
                 authorize_path(server, client, challenge, redirect="https://evil.example/cb"),
                 authorize_path(server, client, challenge, client_id=None)]:
        r = server.request("GET", path, allow_redirects=False)
        assert r.status_code == 400 and "location" not in r.headers and page_error(r.text), path

    def redirected_error(**extra) -> dict:
        """The error goes back to the app by a link the person follows (an
        automatic redirect would make us an open redirector)."""
        r = server.request("GET", authorize_path(server, client, challenge, **extra), allow_redirects=False)
        assert r.status_code == 400 and "location" not in r.headers, r.text
        back = html.unescape(re.search(r'id="back" href="([^"]+)"', r.text).group(1))
        assert back.startswith(REDIRECT), back
        query = parse_qs(urlparse(back).query)
        assert query["state"] == ["the-state"]
        return query

    assert redirected_error(scope="urn:matrix:client:api:*")["error"] == ["invalid_scope"]
    assert redirected_error(scope=f"{SCOPE_DEVICE}ABCDEFGHIJ")["error"] == ["invalid_scope"]
    assert redirected_error(scope=f"urn:matrix:client:api:* {SCOPE_DEVICE}A {SCOPE_DEVICE}B")["error"] == \
        ["invalid_scope"]
    assert redirected_error(code_challenge_method=None)["error"] == ["invalid_request"]
    assert redirected_error(code_challenge_method="plain")["error"] == ["invalid_request"]
    assert redirected_error(code_challenge=None)["error"] == ["invalid_request"]
    assert redirected_error(response_type="token")["error"] == ["unsupported_response_type"]
    assert redirected_error(response_mode="form_post")["error"] == ["invalid_request"]

    # response_mode=fragment: the code comes in the fragment.
    server.register("bob")
    r = sign_in(server, authorize_path(server, client, challenge, response_mode="fragment"), "bob")
    assert r.status_code == 303
    location = urlparse(r.headers["location"])
    assert "code=" not in (location.query or "") and parse_qs(location.fragment)["state"] == ["the-state"]
    code = parse_qs(location.fragment)["code"][0]
    assert exchange(server, client, code, verifier).status_code == 200

    # The request is bound to the browser that opened it: the form sent
    # from another one (no cookie, or another cookie) is refused.
    browser = requests.Session()
    authorization = authorization_of(browser.get(server.url + authorize_path(server, client, challenge)).text)
    good = {"authorization": authorization, "username": "bob", "password": "correct horse battery"}
    for other in [requests.Session()]:
        other.get(server.url + authorize_path(server, client, challenge))  # a cookie of its own
        r = other.post(server.url + "/_conduit/oauth/login", allow_redirects=False, data=good)
        assert "location" not in r.headers and "expired" in page_error(r.text)
    r = requests.post(server.url + "/_conduit/oauth/login", allow_redirects=False, data=good)
    assert "location" not in r.headers and "expired" in page_error(r.text)

    # Wrong passwords show the form again; the fifth ends the request.
    for attempt in range(5):
        r = browser.post(server.url + "/_conduit/oauth/login", allow_redirects=False,
                         data={**good, "password": "wrong"})
        assert r.status_code in (400, 403) and "location" not in r.headers
    assert "Too many" in page_error(r.text)
    r = browser.post(server.url + "/_conduit/oauth/login", allow_redirects=False, data=good)
    assert "location" not in r.headers and "expired" in page_error(r.text)


def test_code_exchange_refusals(server):
    server.register("carol")
    client = client_id(server)
    verifier, challenge = pkce()

    def fresh_code(device: str = "CODEDEV001") -> str:
        return code_of(sign_in(server, authorize_path(server, client, challenge, device=device), "carol"))

    # PKCE mismatch: refused, and the code is spent.
    code = fresh_code()
    r = exchange(server, client, code, pkce()[0])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert exchange(server, client, code, verifier).json()["error"] == "invalid_grant"
    # Another client, another redirect_uri, a missing verifier.
    code = fresh_code()
    assert exchange(server, client_id(server), code, verifier).json()["error"] == "invalid_grant"
    assert exchange(server, client, code, verifier, redirect="https://client.example/cb").json()["error"] == \
        "invalid_grant"
    r = token_request(server, grant_type="authorization_code", code=code, redirect_uri=REDIRECT, client_id=client)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    # Unknown client, unknown grant, doubled parameter.
    r = exchange(server, "nobody", code, verifier)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = token_request(server, grant_type="password", client_id=client)
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = server.request("POST", endpoint(server, "token_endpoint"),
                       data=f"grant_type=authorization_code&code={code}&code={code}&client_id={client}",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    # The code survived those refusals and works once.
    tokens = exchange(server, client, code, verifier)
    assert tokens.status_code == 200, tokens.text
    token = tokens.json()["access_token"]
    assert whoami(server, token).status_code == 200
    # A replayed code is refused and revokes what it gave (RFC 6749 §4.1.2).
    r = exchange(server, client, code, verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert whoami(server, token).json()["errcode"] == "M_UNKNOWN_TOKEN"
    assert exchange(server, client, "made-up", verifier).json()["error"] == "invalid_grant"
    # A code not yet exchanged when the user logs out everywhere is dropped.
    code = fresh_code("CODEDEV002")
    login = server.login("carol").json()
    assert server.request("POST", f"{CS}/logout/all", token=login["access_token"]).status_code == 200
    assert exchange(server, client, code, verifier).json()["error"] == "invalid_grant"


def test_sign_up_with_an_invite_link(make_server):
    server = make_server({"CONDUIT_REGISTRATION_REQUIRES_TOKEN": "true"})
    link = re.search(r"Invite link: (\S+)", admin(server, "invite", "--uses", "1").stdout).group(1)
    client = client_id(server)
    verifier, challenge = pkce()
    path = authorize_path(server, client, challenge, prompt="create")
    browser = requests.Session()
    page = browser.get(server.url + path)
    assert page.status_code == 200 and 'id="create"' in page.text and 'name="token"' in page.text
    authorization = authorization_of(page.text)

    def sign_up(username: str, token: str, confirm: str = "a long password") -> requests.Response:
        return browser.post(server.url + "/_conduit/oauth/signup", allow_redirects=False,
                            data={"authorization": authorization, "username": username,
                                  "password": "a long password", "confirm": confirm, "token": token})

    r = sign_up("dora", "")
    assert r.status_code == 400 and "registration token" in page_error(r.text)
    r = sign_up("dora", "not-a-token")
    assert r.status_code == 400 and page_error(r.text)
    r = sign_up("dora", link, confirm="something else")
    assert r.status_code == 400 and "do not match" in page_error(r.text)
    r = sign_up("Bad Name!", link)
    assert r.status_code == 400 and page_error(r.text)
    # The invite link itself (not only its token) is accepted.
    code = code_of(sign_up("dora", link))
    tokens = exchange(server, client, code, verifier).json()
    assert whoami(server, tokens["access_token"]).json()["user_id"] == "@dora:localhost"
    assert server.login("dora", "a long password").status_code == 200
    # The invite is used up: a second sign-up with it is refused.
    path = authorize_path(server, client, challenge, prompt="create")
    authorization = authorization_of(browser.get(server.url + path).text)
    r = sign_up("eve", link)
    assert r.status_code == 400 and page_error(r.text)
    assert server.login("eve", "a long password").status_code == 403


def test_sign_up_closed_shows_sign_in(make_server):
    server = make_server({"CONDUIT_ALLOW_REGISTRATION": "false"})
    assert "prompt_values_supported" not in metadata(server)
    client = client_id(server)
    page = server.request("GET", authorize_path(server, client, pkce()[1], prompt="create"))
    assert page.status_code == 200 and 'id="sign-in"' in page.text and 'id="create-account"' not in page.text


def test_mastodon_instance_upstream(make_server):
    fake = FakeMastodon("4.4").start()
    try:
        server = make_server(start=False)
        configure_sso(server, '[[global.sso.providers]]\nid = "social"\nname = "Social Example"\nkind = "mastodon"\n'
                              f'instance = "{fake.base_url}"\n')
        server.start()
        fake.login("frank", display_name="Frank")
        client = client_id(server)
        verifier, challenge = pkce()

        def via_instance(browser: requests.Session, device: str) -> requests.Response:
            page = browser.get(server.url + authorize_path(server, client, challenge, device=device))
            button = html.unescape(re.search(r'id="idp-social" href="([^"]+)"', page.text).group(1))
            r = browser.get(server.url + button, allow_redirects=False)
            assert r.status_code == 302, r.text
            r = browser.get(r.headers["location"], allow_redirects=False)  # the instance's authorize
            assert r.status_code == 302, r.text
            return browser.get(r.headers["location"], allow_redirects=False)  # our callback

        # A new identity picks a username, then continues by a link (a
        # redirect would break the form's form-action policy).
        browser = requests.Session()
        r = via_instance(browser, "MASTODEV01")
        assert r.status_code == 200 and 'id="create"' in r.text, r.text
        signup = re.search(r'name="signup" value="([^"]+)"', r.text).group(1)
        r = browser.post(server.url + "/_conduit/sso/signup", data={"signup": signup, "username": "frank"})
        link = html.unescape(re.search(r'id="continue" href="([^"]+)"', r.text).group(1))
        code = parse_qs(urlparse(link).query)["code"][0]
        tokens = exchange(server, client, code, verifier).json()
        assert whoami(server, tokens["access_token"]).json() == {
            "user_id": "@frank:localhost", "device_id": "MASTODEV01"}

        # The known identity goes straight back to the app.
        r = via_instance(requests.Session(), "MASTODEV02")
        code = code_of(r)
        tokens = exchange(server, client, code, verifier).json()
        assert whoami(server, tokens["access_token"]).json()["device_id"] == "MASTODEV02"

        # An unknown authorization cannot start a detour, nor can a link to
        # the detour sent to someone else: a provider that signs them in
        # silently would otherwise skip the page naming the app.
        r = requests.get(server.url + "/_conduit/oauth/sso/social?authorization=nope", allow_redirects=False)
        assert r.status_code == 400 and page_error(r.text)
        page = requests.get(server.url + authorize_path(server, client, challenge, device="MASTODEV03"))
        button = html.unescape(re.search(r'id="idp-social" href="([^"]+)"', page.text).group(1))
        r = requests.get(server.url + button, allow_redirects=False)
        assert r.status_code == 400 and "location" not in r.headers

        # The account page signs in through the instance too (accounts made
        # there have no password), and shows the devices.
        def account_page_via_instance() -> requests.Response:
            browser = requests.Session()
            page = browser.get(server.url + "/_conduit/account?action=org.matrix.device_view&device_id=MASTODEV01")
            button = html.unescape(re.search(r'id="idp-social" href="([^"]+)"', page.text).group(1))
            r = browser.get(server.url + button, allow_redirects=False)
            r = browser.get(r.headers["location"], allow_redirects=False)  # the instance
            return browser.get(r.headers["location"])  # our callback, then the page

        r = account_page_via_instance()
        assert r.status_code == 200 and 'id="device-MASTODEV01"' in r.text and "@frank:localhost" in r.text, r.text
        fake.login("stranger")
        r = account_page_via_instance()
        assert r.status_code == 403 and "not linked" in page_error(r.text)
    finally:
        fake.stop()


def test_full_flow_in_chromium(server):
    server.register("grace")
    client = client_id(server)
    verifier, challenge = pkce()
    ARTIFACTS.mkdir(exist_ok=True)
    job = {"url": server.url + authorize_path(server, client, challenge, device="CHROMEDEV1"),
           "username": "grace", "password": "correct horse battery", "client": "https://client.example",
           "artifacts": str(ARTIFACTS)}
    result = subprocess.run([str(NODE), str(HERE / "js" / "oauth_flow.mjs"), json.dumps(job)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["title"].startswith("Sign in to localhost") and "Test App" in seen["client"]
    redirected = urlparse(seen["redirectedTo"])
    code = parse_qs(redirected.query)["code"][0]
    tokens = exchange(server, client, code, verifier).json()
    assert whoami(server, tokens["access_token"]).json()["device_id"] == "CHROMEDEV1"
    refreshed = token_request(server, grant_type="refresh_token", refresh_token=tokens["refresh_token"],
                              client_id=client).json()
    assert whoami(server, refreshed["access_token"]).status_code == 200
    assert server.request("POST", endpoint(server, "revocation_endpoint"),
                          data={"token": refreshed["refresh_token"]}).status_code == 200
    assert whoami(server, refreshed["access_token"]).status_code == 401


@pytest.mark.parametrize("mode", ["login", "create"])
def test_matrix_rust_sdk_oauth_login(server, mode):
    from sdk_client import SdkClient

    if mode == "login":
        server.register("henry")

    def browser(url: str) -> str:
        """Plays the person: signs in (or up) on our pages, returns where the app was sent."""
        session = requests.Session()
        page = session.get(url)
        assert page.status_code == 200, page.text
        authorization = authorization_of(page.text)
        if mode == "create":
            assert 'id="create"' in page.text, "prompt=create shows the sign-up form"
            r = session.post(server.url + "/_conduit/oauth/signup", allow_redirects=False,
                             data={"authorization": authorization, "username": "henry",
                                   "password": "correct horse battery", "confirm": "correct horse battery"})
        else:
            r = session.post(server.url + "/_conduit/oauth/login", allow_redirects=False,
                             data={"authorization": authorization, "username": "henry",
                                   "password": "correct horse battery"})
        assert r.status_code == 303, r.text
        location = r.headers["location"]
        assert location.startswith("http://127.0.0.1"), location
        return location

    client = SdkClient(server.url, "--oauth", mode, ARTIFACTS / f"sdk-oauth-{mode}.log", authorize=browser)
    try:
        assert client.login["user_id"] == "@henry:localhost"
        device = client.login["device_id"]
        assert client.run("whoami") == {"user_id": "@henry:localhost", "device_id": device}
        client.run("refresh")
        assert client.run("whoami")["device_id"] == device
        # The SDK's E2EE setup uploads the device's keys with the OAuth token.
        login = server.login("henry").json()
        deadline = time.monotonic() + 30
        while True:
            keys = server.request("POST", "/_matrix/client/v3/keys/query", token=login["access_token"],
                                  json={"device_keys": {"@henry:localhost": []}}).json()
            if device in keys["device_keys"].get("@henry:localhost", {}):
                break
            assert time.monotonic() < deadline, f"no keys for {device}: {keys}"
            time.sleep(0.2)
        # (The SDK's own logout refuses a revocation endpoint that is not
        # https, so the plain-HTTP suite revokes by hand in the tests above.)
    finally:
        client.close()


def test_account_management_page(server):
    meta = metadata(server)
    account = urlparse(meta["account_management_uri"]).path
    assert account == "/_conduit/account"
    assert {"org.matrix.devices_list", "org.matrix.device_view", "org.matrix.device_delete",
            "org.matrix.session_end"} <= set(meta["account_management_actions_supported"])
    server.register("ivy")
    keep = server.login("ivy", device_id="KEEPDEVICE").json()
    gone = server.login("ivy", device_id="GONEDEVICE").json()
    asked = f"{account}?action=org.matrix.device_delete&device_id=GONEDEVICE"

    browser = requests.Session()
    page = browser.get(server.url + asked)
    assert page.status_code == 200 and 'id="sign-in"' in page.text and "<script" not in page.text
    form = {"username": "ivy", "password": "wrong", "action": "org.matrix.device_delete", "device_id": "GONEDEVICE"}
    r = browser.post(server.url + f"{account}/login", data=form)
    assert r.status_code == 403 and page_error(r.text)
    r = browser.post(server.url + f"{account}/login", data={**form, "password": "correct horse battery"})
    assert r.status_code == 200 and 'id="confirm"' in r.text and 'id="sign-out-GONEDEVICE"' in r.text, r.text
    assert 'id="device-KEEPDEVICE"' in r.text and "@ivy:localhost" in r.text
    form_token = re.search(r'name="form_token" value="([^"]+)"', r.text).group(1)

    # Without the page's form token (another site posting it): refused.
    r = browser.post(server.url + f"{account}/sign-out-device", data={"device_id": "GONEDEVICE"})
    assert r.status_code == 403
    # Without the cookie: refused too.
    r = requests.post(server.url + f"{account}/sign-out-device",
                      data={"device_id": "GONEDEVICE", "form_token": form_token})
    assert r.status_code == 403
    assert whoami(server, gone["access_token"]).status_code == 200

    r = browser.post(server.url + f"{account}/sign-out-device",
                     data={"device_id": "GONEDEVICE", "form_token": form_token})
    assert r.status_code == 200 and 'id="device-GONEDEVICE"' not in r.text
    assert whoami(server, gone["access_token"]).json()["errcode"] == "M_UNKNOWN_TOKEN"
    assert whoami(server, keep["access_token"]).status_code == 200

    r = browser.post(server.url + f"{account}/logout", data={"form_token": form_token})
    assert r.status_code == 200 and 'id="sign-in"' in r.text
