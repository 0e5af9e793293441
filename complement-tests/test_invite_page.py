"""The invite page: served without JavaScript, never used by opening it,
registering through its form; rendered in headless Chromium (screenshots in
complement-tests/artifacts/)."""

import re
import subprocess
from pathlib import Path

from conftest import ARTIFACTS, binary
from test_admin_cli import admin
from test_js_sdk import NODE

HERE = Path(__file__).resolve().parent
CS = "/_matrix/client/v3"


def invite_link(server, *words) -> str:
    output = admin(server, "invite", *words).stdout
    return re.search(r"Invite link: (\S+)", output).group(1)


def test_invite_page_in_chromium(make_server):
    server = make_server({"CONDUIT_REGISTRATION_REQUIRES_TOKEN": "true"})
    link = invite_link(server)
    assert link.startswith(f"{server.url}/_conduit/invite/")
    result = subprocess.run([str(NODE), str(HERE / "js" / "invite_page.mjs"), server.url, link, str(ARTIFACTS)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert (ARTIFACTS / "invite-page.png").stat().st_size > 10_000


def test_invite_page_over_plain_http(make_server):
    server = make_server({"CONDUIT_REGISTRATION_REQUIRES_TOKEN": "true"})
    link = invite_link(server, "--uses", "2")
    path = link.removeprefix(server.url)
    token = link.rsplit("/", 1)[1]
    page = server.request("GET", path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text and "2 of 2 uses left" in page.text and "<svg" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert server.request("GET", path).status_code == 200

    # Form errors: bad name, taken name, empty password; nothing used.
    r = server.request("POST", path, data={"username": "Bad Name!", "password": "pw1", "confirm": "pw1"})
    assert r.status_code == 400 and 'id="error"' in r.text
    r = server.request("POST", path, data={"username": "conduit", "password": "pw1", "confirm": "pw1"})
    assert r.status_code == 400 and "already taken" in r.text
    r = server.request("POST", path, data={"username": "someone", "password": "", "confirm": ""})
    assert r.status_code == 400
    assert "2 of 2 uses left" in server.request("GET", path).text

    r = server.request("POST", path, data={"username": "first_one", "password": "pw12345", "confirm": "pw12345"})
    assert r.status_code == 200 and "@first_one:localhost" in r.text
    assert "1 of 2 uses left" in server.request("GET", path).text
    assert server.login("first_one", "pw12345").status_code == 200

    # Escaping: what the user typed comes back escaped.
    r = server.request("POST", path, data={"username": "<b>x</b>", "password": "a", "confirm": "b"})
    assert "<b>x</b>" not in r.text and "&lt;b&gt;x&lt;/b&gt;" in r.text

    # Revoked and unknown links.
    admin(server, "token", "revoke", token)
    r = server.request("GET", path)
    assert r.status_code == 404 and "revoked" in r.text
    r = server.request("POST", path, data={"username": "late", "password": "pw", "confirm": "pw"})
    assert r.status_code == 404
    assert server.request("GET", "/_conduit/invite/nope").status_code == 404
    # The request log shows the pages without their tokens.
    assert token not in server.log() and "/_conduit/invite/<redacted>" in server.log()
