"""Single sign-on with a Mastodon instance: the suite's Mastodon-compatible
OAuth server (sso_peers/mastodon.py) as a 4.2-style instance (no metadata,
no PKCE, scope read:accounts, verify_credentials) and a 4.4-style one
(metadata, PKCE S256, scope profile, /oauth/userinfo). The server registers
its own app on the instance, keeps it, registers again when the instance
forgot it, and maps the account's URI (not its username) to the user."""

import html
import re
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from sso_peers.mastodon import AVATAR_PNG
from sso_peers import CLIENT_REDIRECT, FakeMastodon, browser_login, configure_sso, login_path, token_login
from test_admin_cli import admin
from test_cli import run


@pytest.fixture
def instance(request):
    fake = FakeMastodon(getattr(request, "param", "4.4")).start()
    yield fake
    fake.stop()


def mastodon_server(make_server, fake: FakeMastodon):
    server = make_server(start=False)
    configure_sso(
        server,
        '[[global.sso.providers]]\nid = "social"\nname = "Social Example"\nkind = "mastodon"\n'
        f'instance = "{fake.base_url}"\n',
    )
    return server.start()


def http_login(server, pick: str | None = None, link: tuple[str, str] | None = None,
               redirect: str = CLIENT_REDIRECT) -> tuple[str, dict | None]:
    """One login with plain HTTP (the instance signs in without a page):
    returns the login token and the username form's state, if it came.
    `link` (username, password) links the identity to that account instead."""
    browser = requests.Session()
    r = browser.get(server.url + login_path("social", redirect), allow_redirects=False)
    assert r.status_code == 302, r.text
    r = browser.get(r.headers["location"], allow_redirects=False)  # the instance's authorize
    assert r.status_code == 302, r.text
    r = browser.get(r.headers["location"])  # back at our callback
    assert r.status_code == 200, r.text
    form = None
    if 'id="create"' in r.text:
        signup = re.search(r'name="signup" value="([^"]+)"', r.text).group(1)
        prefilled = html.unescape(re.search(r'id="username" name="username" value="([^"]*)"', r.text).group(1))
        error = re.search(r'id="error">([^<]+)<', r.text)
        form = {"prefilled": prefilled, "error": error and html.unescape(error.group(1))}
        if link:
            r = browser.post(server.url + "/_conduit/sso/link",
                             data={"signup": signup, "link_username": link[0], "link_password": link[1]})
        else:
            r = browser.post(server.url + "/_conduit/sso/signup",
                             data={"signup": signup, "username": pick or prefilled, "import_displayname": "on"})
        assert r.status_code == 200, r.text
        if 'id="error"' in r.text:
            raise AssertionError(html.unescape(re.search(r'id="error">([^<]+)<', r.text).group(1)))
    link = html.unescape(re.search(r'id="continue" href="([^"]+)"', r.text).group(1))
    assert link.startswith(redirect.split("?")[0]), link
    return parse_qs(urlparse(link).query)["loginToken"][0], form


def identities(server) -> str:
    """The stored (provider, subject) -> user rows, read from the stopped server."""
    server.stop()
    rows = run(["db", "scan", "sso_identities"], env={"CONDUIT_DATABASE_PATH": server.env["CONDUIT_DATABASE_PATH"]})
    assert rows.returncode == 0, rows.stderr
    return rows.stdout


@pytest.mark.parametrize("instance", ["4.2", "4.4"], indirect=True)
def test_both_versions_log_in_and_map_the_account_uri(make_server, instance):
    server = mastodon_server(make_server, instance)
    instance.login("alice", display_name="Alice of Social")

    token, form = http_login(server)
    assert form == {"prefilled": "alice", "error": None}
    r = token_login(server, token)
    assert r.status_code == 200 and r.json()["user_id"] == "@alice:localhost"
    profile = server.request("GET", "/_matrix/client/v3/profile/@alice:localhost").json()
    assert profile["displayname"] == "Alice of Social"
    # The instance's avatar came along, stored as the new user's media.
    assert profile["avatar_url"].startswith("mxc://localhost/")
    avatar = server.request("GET", f"/_matrix/client/v1/media/download/{profile['avatar_url'][6:]}",
                            token=r.json()["access_token"])
    assert avatar.status_code == 200 and avatar.content == AVATAR_PNG
    assert avatar.headers["Content-Type"] == "image/png"

    state = instance.state()
    assert state["apps_registered"] == 1
    authorize = state["last_authorize"]
    if instance.mode == "4.2":
        assert authorize["scope"] == "read:accounts" and "code_challenge" not in authorize
    else:
        assert authorize["scope"] == "profile" and authorize["code_challenge_method"] == "S256"

    # Again: the same user, no form, the stored app reused.
    token, form = http_login(server)
    assert form is None
    assert token_login(server, token).json()["user_id"] == "@alice:localhost"
    assert instance.state()["apps_registered"] == 1

    # After a restart the server checks that the instance still knows its
    # app (a client-credentials token, revoked at once) and reuses it.
    server.stop()
    server.start()
    token, _ = http_login(server)
    assert token_login(server, token).status_code == 200
    state = instance.state()
    assert state["apps_registered"] == 1 and state["last_token_request"]["grant_type"] == "authorization_code"
    assert state["client_credentials_grants"] == 1, "one check after the restart"
    assert state["app_tokens"] == 0, "the check's app token was revoked"

    # The subject is the account's ActivityPub URI on that instance.
    assert f'"{instance.base_url}/users/alice"' in identities(server)


def test_an_instance_upgrading_to_44_keeps_its_people(make_server):
    fake = FakeMastodon("4.2").start()
    try:
        server = mastodon_server(make_server, fake)
        fake.login("bob")
        token, _ = http_login(server)
        assert token_login(server, token).json()["user_id"] == "@bob:localhost"

        server.stop()
        fake.mode = "4.4"  # the admin upgrades Mastodon
        server.start()
        token, form = http_login(server)
        assert form is None, "the same account URI maps to the same user"
        assert token_login(server, token).json()["user_id"] == "@bob:localhost"
        state = fake.state()
        assert state["apps_registered"] == 2, "a new app for the profile scope"
        assert state["last_authorize"]["scope"] == "profile"
    finally:
        fake.stop()


def test_a_forgotten_app_is_registered_again(make_server, instance):
    server = mastodon_server(make_server, instance)
    instance.login("carol")
    token, _ = http_login(server)
    assert token_login(server, token).status_code == 200

    instance.forget_apps()
    # A restart drops what the server checked recently; the stored app is
    # then found unknown and replaced before the browser is sent there.
    server.stop()
    server.start()
    token, form = http_login(server)
    assert form is None
    assert token_login(server, token).json()["user_id"] == "@carol:localhost"
    assert instance.state()["apps_registered"] == 2


def test_same_username_elsewhere_is_another_identity(make_server, instance):
    """Two instances both have an `alice`: the second is a new identity and
    is asked for another username."""
    other = FakeMastodon("4.4").start()
    try:
        server = make_server(start=False)
        configure_sso(server, "".join(
            f'[[global.sso.providers]]\nid = "{idp}"\nname = "{idp}"\nkind = "mastodon"\ninstance = "{fake.base_url}"\n'
            for idp, fake in [("social", instance), ("other", other)]
        ))
        server.start()
        instance.login("alice")
        other.login("alice")
        token, _ = http_login(server)
        assert token_login(server, token).json()["user_id"] == "@alice:localhost"

        seen = browser_login(server, login_path("other"), "alice", "sso-mastodon-other", pick="alice.other")
        assert "“alice” is not available" in seen["form"]["error"]
        assert token_login(server, seen["loginToken"]).json()["user_id"] == "@alice.other:localhost"
    finally:
        other.stop()


def test_nobody_signed_in_at_the_instance_stays_there(make_server, instance):
    server = mastodon_server(make_server, instance)
    instance.login(None)
    browser = requests.Session()
    r = browser.get(server.url + login_path("social"), allow_redirects=False)
    r = browser.get(r.headers["location"], allow_redirects=False)
    assert r.status_code == 200, "the instance shows its own page; nothing reaches us"
    assert "@" not in identities(server)


def test_unreachable_instance_is_explained(make_server):
    fake = FakeMastodon("4.4").start()
    fake.stop()  # the port is closed now
    server = mastodon_server(make_server, fake)
    r = server.request("GET", login_path("social"), allow_redirects=False)
    assert r.status_code == 502 and "Social Example did not answer as expected" in r.text
    assert "Traceback" not in r.text


def test_an_existing_password_account_links_its_mastodon_identity(make_server, instance):
    server = mastodon_server(make_server, instance)
    dave = server.register("dave", "dave's password")
    instance.login("dave_on_social")

    with pytest.raises(AssertionError, match="Wrong username or password: nothing was linked"):
        http_login(server, link=("dave", "not it"))
    token, form = http_login(server, link=("dave", "dave's password"))
    assert form["prefilled"] == "dave_on_social"
    assert token_login(server, token).json()["user_id"] == "@dave:localhost"
    # From now on the identity signs in to dave directly; the password still works.
    token, form = http_login(server)
    assert form is None and token_login(server, token).json()["user_id"] == "@dave:localhost"
    assert server.login("dave", "dave's password").status_code == 200

    # Passwords off: linking by password is refused too.
    server.stop()
    server.env["CONDUIT_SSO__PASSWORD_LOGIN"] = "false"
    server.start()
    instance.login("dave_again")
    with pytest.raises(AssertionError, match="cannot be linked by its password"):
        http_login(server, link=("dave", "dave's password"))
    del server.env["CONDUIT_SSO__PASSWORD_LOGIN"]
    server.stop()
    server.start()

    # Synapse's admin API lists the identity.
    admin(server, "user", "make-admin", "@dave:localhost")
    dave = server.login("dave", "dave's password").json()
    user = server.request("GET", "/_synapse/admin/v2/users/@dave:localhost", token=dave["access_token"]).json()
    assert user["external_ids"] == [{"auth_provider": "social", "external_id": f"{instance.base_url}/users/dave_on_social"}]

    # A user with a password and an identity may confirm with either.
    r = server.request("DELETE", f"/_matrix/client/v3/devices/{dave['device_id']}", token=dave["access_token"], json={})
    assert sorted(f["stages"][0] for f in r.json()["flows"]) == ["m.login.password", "m.login.sso"]

    # The admin sees and removes the link; the identity is then new again.
    listed = admin(server, "user", "identities", "dave").stdout
    assert f"social {instance.base_url}/users/dave_on_social" in listed
    assert "Unlinked 1 identity of @dave:localhost at social" in admin(server, "user", "unlink", "dave", "social").stdout
    assert "no single sign-on identities" in admin(server, "user", "identities", "dave").stdout
    failed = admin(server, "user", "unlink", "dave", "social", ok=False)
    assert failed.returncode != 0 and "has no identity at provider social" in failed.stderr
    instance.login("dave_on_social")
    _, form = http_login(server, pick="dave2")
    assert form is not None, "no longer linked: a new identity"


def test_three_wrong_link_passwords_end_the_signup(make_server, instance):
    server = mastodon_server(make_server, instance)
    server.register("erin", "erin's password")
    instance.login("erin_m")
    browser = requests.Session()
    r = browser.get(server.url + login_path("social"), allow_redirects=False)
    r = browser.get(r.headers["location"], allow_redirects=False)
    r = browser.get(r.headers["location"])
    signup = re.search(r'name="signup" value="([^"]+)"', r.text).group(1)
    answers = [browser.post(server.url + "/_conduit/sso/link",
                            data={"signup": signup, "link_username": "erin", "link_password": f"guess {i}"})
               for i in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 403, 400]
    assert "Too many wrong passwords" in answers[2].text
    assert "unknown or has expired" in answers[3].text, "the signup is gone, even for the right password"


def test_element_desktop_redirect_and_browser_schemes(make_server, instance):
    server = mastodon_server(make_server, instance)
    instance.login("frank")
    # Element Desktop comes back through its own scheme; its query is kept.
    desktop = "element://vector/webapp/?element-desktop-ssoid=abc%20def"
    token, _ = http_login(server, redirect=desktop)
    assert token_login(server, token).json()["user_id"] == "@frank:localhost"
    for bad in ["javascript:alert(1)", "data:text/html,<b>x</b>", "file:///etc/passwd", "https://"]:
        r = server.request("GET", login_path("social", bad), allow_redirects=False)
        assert r.status_code == 400 and "invalid return address" in r.text, bad


def test_metadata_pointing_outside_the_instance_is_refused(make_server, instance, monkeypatch):
    honest = instance.metadata
    monkeypatch.setattr(instance, "metadata", lambda: {**honest(), "token_endpoint": "http://127.0.0.2:9/steal"})
    server = mastodon_server(make_server, instance)
    r = server.request("GET", login_path("social"), allow_redirects=False)
    assert r.status_code == 502
    assert "endpoint outside the instance: http://127.0.0.2:9/steal" in server.log()
    assert instance.state()["apps_registered"] == 0, "no secret was sent anywhere"
