"""A Mastodon-compatible OAuth server for the SSO black-box tests (stdlib only).

Follows Mastodon's documented API (docs.joinmastodon.org: methods/apps,
methods/oauth, methods/accounts) in two modes:

- "4.2": no /.well-known/oauth-authorization-server, no PKCE (code_challenge
  ignored), no `profile` scope (unknown scopes fail app registration with 422
  and /oauth/authorize with error=invalid_scope), no /oauth/userinfo; identity
  only from /api/v1/accounts/verify_credentials.
- "4.4": RFC 8414 metadata, PKCE S256 checked when a challenge was given,
  `profile` scope, /oauth/userinfo.

As on a real instance, the issuer is the root URL *with* a trailing slash
("http://127.0.0.1:P/"), and userinfo's `sub` is the account's ActivityPub URI.

Not Mastodon (for tests): POST /_test/login {"username", "display_name"?}
(username null logs out), POST /_test/forget_apps, GET /_test/state.
Nobody logged in: /oauth/authorize answers a small 200 page instead of
Mastodon's redirect to its sign-in page. Logged in: it answers 302 to the
redirect_uri at once, as if the user had clicked "Authorize".

CLI: python mastodon.py --port P --mode 4.2|4.4  (prints `ready http://127.0.0.1:P`)
"""

import argparse
import base64
import hashlib
import html
import json
import secrets
import struct
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

# Mastodon's configured scopes (config/initializers/doorkeeper.rb); 4.3 dropped
# `crypto` and added `profile`.
_COMMON_SCOPES = (
    ["read", "write"]
    + [f"write:{s}" for s in "accounts blocks bookmarks conversations favourites filters follows lists media mutes notifications reports statuses".split()]
    + [f"read:{s}" for s in "accounts blocks bookmarks favourites filters follows lists mutes notifications search statuses".split()]
    + ["follow", "push"]
)
_ADMIN_SCOPES = ["admin:read", "admin:write"] + [
    f"admin:{rw}:{s}" for rw in ("read", "write")
    for s in "accounts reports domain_allows domain_blocks ip_blocks email_domain_blocks canonical_email_blocks".split()
]
SCOPES = {"4.2": _COMMON_SCOPES + _ADMIN_SCOPES + ["crypto"], "4.4": _COMMON_SCOPES + ["profile"] + _ADMIN_SCOPES}

# Doorkeeper's error texts, as Mastodon returns them.
INVALID_GRANT = ("The provided authorization grant is invalid, expired, revoked, does not match the redirection URI "
                 "used in the authorization request, or was issued to another client.")
INVALID_CLIENT = ("Client authentication failed due to unknown client, no client authentication included, "
                  "or unsupported authentication method.")
INVALID_SCOPE = "The requested scope is invalid, unknown, or malformed."
CODE_TTL = 600  # Doorkeeper's default authorization_code_expires_in
FIRST_ACCOUNT_ID = 109000000000000001


def _tiny_png() -> bytes:
    """A valid 1x1 PNG, so a server that downloads the avatar gets an image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x63\x8c\xf7")) + chunk(b"IEND", b""))


AVATAR_PATH = "/avatars/original/missing.png"  # Mastodon's default avatar
AVATAR_PNG = _tiny_png()


class FakeMastodon:
    """The instance's state plus its HTTP server; start() binds a free loopback port."""

    def __init__(self, mode: str = "4.4", port: int = 0, verbose: bool = False):
        if mode not in SCOPES:
            raise ValueError(f"mode must be one of {sorted(SCOPES)}")
        self.mode = mode
        self.port = port
        self.verbose = verbose
        self.lock = threading.Lock()
        self.apps: dict[str, dict] = {}  # client_id -> app
        self.accounts: dict[str, dict] = {}  # username -> account
        self.codes: dict[str, dict] = {}  # authorization code -> grant
        self.tokens: dict[str, dict] = {}  # access token -> {client_id, username, scopes}
        self.client_credentials_grants = 0  # app tokens handed out (our server's "app still known?" checks)
        self.logged_in: str | None = None
        self.apps_registered = 0
        self.last_authorize: dict | None = None
        self.last_token_request: dict | None = None
        self.last_token_auth: str | None = None  # "basic" or "post"
        self._next_app_id = 1
        self._httpd: ThreadingHTTPServer | None = None

    # --- lifecycle -------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.base_url + "/"  # Rails' root_url, as Mastodon reports it

    def start(self) -> "FakeMastodon":
        handler = type("Handler", (_Handler,), {"mastodon": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, name="fake-mastodon", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeMastodon":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- control (also at /_test/...) -----------------------------------

    def login(self, username: str | None, display_name: str | None = None) -> dict | None:
        """Makes `username` the user logged in on the instance (creating the
        account on first use); None logs out."""
        with self.lock:
            self.logged_in = username
            if username is None:
                return None
            account = self.accounts.get(username)
            if account is None:
                account = {"id": str(FIRST_ACCOUNT_ID + len(self.accounts)), "username": username,
                           "display_name": "", "created_at": time.strftime("%Y-%m-%dT00:00:00.000Z", time.gmtime())}
                self.accounts[username] = account
            if display_name is not None:
                account["display_name"] = display_name
            return account

    def forget_apps(self) -> None:
        """Drops every app, with its codes and tokens, like an instance that
        vacuumed (pre-4.3) or lost our registration."""
        with self.lock:
            self.apps.clear()
            self.codes.clear()
            self.tokens.clear()

    def state(self) -> dict:
        with self.lock:
            return {"apps_registered": self.apps_registered, "last_authorize": self.last_authorize,
                    "last_token_request": self.last_token_request, "last_token_auth": self.last_token_auth,
                    "logged_in": self.logged_in,
                    "client_credentials_grants": self.client_credentials_grants,
                    "app_tokens": sum(1 for t in self.tokens.values() if t["username"] is None)}

    # --- entities ----------------------------------------------------------

    def account_entity(self, account: dict) -> dict:
        """A CredentialAccount, as verify_credentials returns it."""
        base, name = self.base_url, account["username"]
        return {
            "id": account["id"], "username": name, "acct": name, "display_name": account["display_name"],
            "locked": False, "bot": False, "discoverable": None, "group": False, "created_at": account["created_at"],
            "note": "", "url": f"{base}/@{name}", "uri": f"{base}/users/{name}",
            "avatar": base + AVATAR_PATH, "avatar_static": base + AVATAR_PATH,
            "header": base + "/headers/original/missing.png", "header_static": base + "/headers/original/missing.png",
            "followers_count": 0, "following_count": 0, "statuses_count": 0, "last_status_at": None,
            "emojis": [], "fields": [],
            "source": {"privacy": "public", "sensitive": False, "language": None, "note": "", "fields": [],
                       "follow_requests_count": 0},
        }

    def userinfo(self, account: dict) -> dict:
        base, name = self.base_url, account["username"]
        return {"iss": self.issuer, "sub": f"{base}/users/{name}", "name": account["display_name"],
                "preferred_username": name, "profile": f"{base}/@{name}", "picture": base + AVATAR_PATH}

    def metadata(self) -> dict:
        base = self.base_url
        return {
            "issuer": self.issuer,
            "service_documentation": "https://docs.joinmastodon.org/",
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "app_registration_endpoint": f"{base}/api/v1/apps",
            "revocation_endpoint": f"{base}/oauth/revoke",
            "userinfo_endpoint": f"{base}/oauth/userinfo",
            "scopes_supported": SCOPES[self.mode],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class _Handler(BaseHTTPRequestHandler):
    mastodon: FakeMastodon  # set by FakeMastodon.start()
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.mastodon.verbose:
            sys.stderr.write(f"mastodon {self.mastodon.mode}: {fmt % args}\n")

    # --- plumbing ---------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def _html(self, status: int, text: str) -> None:
        page = f"<!doctype html><html><head><meta charset='utf-8'><title>Fake Mastodon</title></head><body>{text}</body></html>"
        self._send(status, page.encode(), "text/html; charset=utf-8")

    def _redirect(self, url: str) -> None:
        self._send(302, b"", "text/html; charset=utf-8", {"Location": url})

    def _body(self) -> dict:
        """Form or JSON body. Form values stay lists (for redirect_uris[]);
        JSON values are taken as they are."""
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if (self.headers.get("Content-Type") or "").startswith("application/json"):
            try:
                data = json.loads(raw or b"{}")
            except ValueError:
                return {}
            return data if isinstance(data, dict) else {}
        return parse_qs(raw.decode(), keep_blank_values=True)

    @staticmethod
    def _one(value):
        """The single value of a form field (lists come from parse_qs)."""
        return value[0] if isinstance(value, list) and value else (None if isinstance(value, list) else value)

    def _bearer(self) -> dict | None:
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            return None
        return self.mastodon.tokens.get(auth.removeprefix("Bearer ").strip())

    # --- routes -------------------------------------------------------------

    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def _route(self, method: str) -> None:
        m = self.mastodon
        url = urlparse(self.path)
        path = url.path
        routes = {
            ("GET", "/.well-known/oauth-authorization-server"): self.well_known if m.mode == "4.4" else None,
            ("POST", "/api/v1/apps"): self.create_app,
            ("GET", "/oauth/authorize"): self.authorize,
            ("POST", "/oauth/token"): self.token,
            ("POST", "/oauth/revoke"): self.revoke,
            ("GET", "/oauth/userinfo"): self.userinfo if m.mode == "4.4" else None,
            ("POST", "/oauth/userinfo"): self.userinfo if m.mode == "4.4" else None,
            ("GET", "/api/v1/accounts/verify_credentials"): self.verify_credentials,
            ("GET", AVATAR_PATH): lambda _q: self._send(200, AVATAR_PNG, "image/png"),
            ("POST", "/_test/login"): self.test_login,
            ("POST", "/_test/forget_apps"): lambda _q: (m.forget_apps(), self._json(200, {}))[1],
            ("GET", "/_test/state"): lambda _q: self._json(200, m.state()),
        }
        handler = routes.get((method, path))
        if handler is None:
            # Rails' 404 for unknown routes is an HTML page; JSON is as good here.
            self._json(404, {"error": "Record not found"})
            return
        try:
            handler({k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()})
        except Exception as e:  # keep the server alive and say what broke
            self._json(500, {"error": f"fake mastodon: {type(e).__name__}: {e}"})
            raise

    def well_known(self, _query) -> None:
        self._json(200, self.mastodon.metadata())

    def create_app(self, _query) -> None:
        m = self.mastodon
        body = self._body()
        name = self._one(body.get("client_name"))
        # A string (several URIs separated by newlines, as Doorkeeper stores
        # them) or an array (JSON, or redirect_uris[] in a form).
        raw = body.get("redirect_uris", body.get("redirect_uris[]")) or []
        uris = [uri for item in ([raw] if isinstance(raw, str) else raw) for uri in str(item).split()]
        scopes = (self._one(body.get("scopes")) or "read").split()
        website = self._one(body.get("website"))
        if not name:
            return self._json(422, {"error": "Validation failed: Application name can't be blank"})
        if not uris:
            return self._json(422, {"error": "Validation failed: Redirect URI can't be blank"})
        for uri in uris:
            parsed = urlparse(uri)
            absolute = uri == "urn:ietf:wg:oauth:2.0:oob" or (parsed.scheme and parsed.netloc)
            if not absolute or parsed.fragment:
                return self._json(422, {"error": "Validation failed: Redirect URI must be an absolute URI."})
        if not set(scopes) <= set(SCOPES[m.mode]):
            # Mastodon runs Doorkeeper with enforce_configured_scopes.
            return self._json(422, {"error": "Validation failed: Scopes doesn't match configured on the server."})
        with m.lock:
            app = {"id": str(m._next_app_id), "name": name, "website": website, "scopes": scopes,
                   "redirect_uris": uris, "client_id": secrets.token_urlsafe(32), "client_secret": secrets.token_urlsafe(32)}
            m._next_app_id += 1
            m.apps[app["client_id"]] = app
            m.apps_registered += 1
        entity = {"id": app["id"], "name": name, "website": website, "redirect_uri": "\n".join(uris)}
        if m.mode == "4.4":  # CredentialApplication (4.3+)
            entity |= {"scopes": scopes, "redirect_uris": uris}
        entity |= {"client_id": app["client_id"], "client_secret": app["client_secret"]}
        if m.mode == "4.4":
            entity["client_secret_expires_at"] = 0
        entity["vapid_key"] = "BCk-QqERU0q-CfYZjcuB6lnyyOYfJ2AifKqfeGIm7Z-HiTU5T9eTG5GxVA0_OH5mMlI4UkkDTpaZwozy0TzdZ2M="
        self._json(200, entity)

    def authorize(self, q: dict) -> None:
        m = self.mastodon
        with m.lock:
            m.last_authorize = dict(q)
        # Doorkeeper's pre-authorization checks, in its order. Until the client
        # and redirect_uri are known good, errors are a page, not a redirect.
        app = m.apps.get(q.get("client_id", ""))
        if app is None:
            return self._html(400, f"<h1>An error has occurred</h1><p id='error'>invalid_client</p><p>{INVALID_CLIENT}</p>")
        redirect_uri = q.get("redirect_uri", "")
        if redirect_uri not in app["redirect_uris"]:
            return self._html(400, "<h1>An error has occurred</h1><p id='error'>invalid_redirect_uri</p>"
                                   "<p>The requested redirect uri is malformed or doesn't match client redirect URI.</p>")

        def fail(error: str, description: str) -> None:
            params = {"error": error, "error_description": description}
            if "state" in q:
                params["state"] = q["state"]
            self._redirect(redirect_uri + ("&" if "?" in redirect_uri else "?") + urlencode(params))

        if q.get("response_type") != "code":
            return fail("unsupported_response_type", "The authorization server does not support this response type.")
        scopes = (q.get("scope") or "read").split()
        if not set(scopes) <= set(SCOPES[m.mode]) or not set(scopes) <= set(app["scopes"]):
            return fail("invalid_scope", INVALID_SCOPE)
        challenge = None
        if m.mode == "4.4" and q.get("code_challenge"):  # 4.2 has no PKCE: ignored
            if q.get("code_challenge_method") != "S256":
                return fail("invalid_request", "The code_challenge_method must be S256.")
            challenge = q["code_challenge"]

        if m.logged_in is None:
            # Mastodon would redirect to /auth/sign_in; a page is enough for tests.
            return self._html(200, "<p id='not-logged-in'>Nobody is logged in on this instance.</p>")
        code = secrets.token_urlsafe(32)
        with m.lock:
            m.codes[code] = {"client_id": app["client_id"], "redirect_uri": redirect_uri, "scopes": scopes,
                             "username": m.logged_in, "challenge": challenge, "expires": time.time() + CODE_TTL}
        params = {"code": code}
        if "state" in q:
            params["state"] = q["state"]
        self._redirect(redirect_uri + ("&" if "?" in redirect_uri else "?") + urlencode(params))

    def _client_auth(self, form: dict) -> tuple[dict | None, str]:
        """Doorkeeper's order: HTTP Basic first, then client_id/secret in the body."""
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return None, "basic"
            how = "basic"
        else:
            client_id, secret, how = form.get("client_id", ""), form.get("client_secret", ""), "post"
        app = self.mastodon.apps.get(client_id)
        if app is None or not secrets.compare_digest(app["client_secret"], secret or ""):
            return None, how
        return app, how

    def token(self, _query) -> None:
        m = self.mastodon
        form = {k: self._one(v) for k, v in self._body().items()}
        app, how = self._client_auth(form)
        with m.lock:
            m.last_token_request, m.last_token_auth = dict(form), how
        if app is None:
            return self._json(401, {"error": "invalid_client", "error_description": INVALID_CLIENT})
        grant_type = form.get("grant_type")
        if grant_type == "client_credentials":  # an app token, no user
            with m.lock:
                m.client_credentials_grants += 1
            scopes = (form.get("scope") or "read").split()
            if not set(scopes) <= set(app["scopes"]):
                return self._json(400, {"error": "invalid_scope", "error_description": INVALID_SCOPE})
            return self._issue(app, None, scopes)
        if grant_type != "authorization_code":
            return self._json(400, {"error": "unsupported_grant_type",
                                    "error_description": "The authorization grant type is not supported by the authorization server."})
        with m.lock:
            grant = m.codes.pop(form.get("code") or "", None)  # single use, even when the rest is wrong
        bad = (grant is None or grant["expires"] < time.time() or grant["client_id"] != app["client_id"]
               or grant["redirect_uri"] != form.get("redirect_uri"))
        if not bad and m.mode == "4.4":
            # Doorkeeper: no verifier is fine only without a challenge, and a
            # verifier without a challenge fails too.
            verifier = form.get("code_verifier")
            if verifier or grant["challenge"]:
                bad = not (verifier and grant["challenge"] and secrets.compare_digest(_s256(verifier), grant["challenge"]))
        if bad:
            return self._json(400, {"error": "invalid_grant", "error_description": INVALID_GRANT})
        self._issue(app, grant["username"], grant["scopes"])

    def _issue(self, app: dict, username: str | None, scopes: list[str]) -> None:
        token = secrets.token_urlsafe(32)
        with self.mastodon.lock:
            self.mastodon.tokens[token] = {"client_id": app["client_id"], "username": username, "scopes": scopes}
        self._json(200, {"access_token": token, "token_type": "Bearer", "scope": " ".join(scopes),
                         "created_at": int(time.time())})

    def revoke(self, _query) -> None:
        m = self.mastodon
        form = {k: self._one(v) for k, v in self._body().items()}
        app, _ = self._client_auth(form)
        if app is None:
            return self._json(403, {"error": "unauthorized_client", "error_description": "You are not authorized to revoke this token"})
        with m.lock:
            token = m.tokens.get(form.get("token") or "")
            if token and token["client_id"] == app["client_id"]:
                del m.tokens[form["token"]]
        self._json(200, {})

    def _user_token(self, allowed: set[str]) -> dict | None:
        """The account behind the Bearer token if it has one of `allowed`
        scopes; otherwise sends Mastodon's error and returns None."""
        token = self._bearer()
        if token is None:
            self._json(401, {"error": "The access token is invalid"})
            return None
        if not allowed & set(token["scopes"]):
            self._json(403, {"error": "This action is outside the authorized scopes"})
            return None
        if token["username"] is None:
            self._json(422, {"error": "This method requires an authenticated user"})
            return None
        return self.mastodon.accounts[token["username"]]

    def verify_credentials(self, _query) -> None:
        account = self._user_token({"read", "read:accounts", "profile"})
        if account is not None:
            self._json(200, self.mastodon.account_entity(account))

    def userinfo(self, _query) -> None:
        account = self._user_token({"profile"})
        if account is not None:
            self._json(200, self.mastodon.userinfo(account))

    def test_login(self, _query) -> None:
        body = self._body()
        body = {k: self._one(v) for k, v in body.items()}
        account = self.mastodon.login(body.get("username"), body.get("display_name"))
        self._json(200, self.mastodon.account_entity(account) if account else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=sorted(SCOPES), default="4.4")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args()
    mastodon = FakeMastodon(args.mode, args.port, verbose=args.verbose).start()
    print(f"ready {mastodon.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        mastodon.stop()


if __name__ == "__main__":
    main()
