"""Test identity providers for the SSO black-box tests.

- start_oidc_provider(): an OpenID provider (oidc-provider on Node 22, see
  oidc_provider.mjs) run as a subprocess.
- FakeMastodon: a Mastodon-compatible OAuth server in this process (mastodon.py).
"""

import json
import subprocess
import tempfile
import time
from pathlib import Path

from sso_peers.mastodon import FakeMastodon
from test_js_sdk import NODE  # the Node 22 the JS tests use (npm package `node`)

HERE = Path(__file__).resolve().parent

__all__ = [
    "CLIENT_REDIRECT", "FakeMastodon", "OidcProvider", "browser_login", "configure_sso", "login_path",
    "start_oidc_provider", "token_login",
]


class OidcProvider:
    """A running oidc_provider.mjs; `issuer` is its base URL."""

    def __init__(self, proc: subprocess.Popen, issuer: str, log_path: Path, accounts_file: Path):
        self.proc = proc
        self.issuer = issuer
        self.log_path = log_path
        self._accounts_file = accounts_file

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._accounts_file.unlink(missing_ok=True)


def start_oidc_provider(
    port: int, client_id: str, client_secret: str, redirect_uris: list[str], accounts: dict, log_path: Path,
    timeout: float = 30.0,
) -> OidcProvider:
    """Starts the provider with `accounts` (login name -> claims, each with a `sub`)
    and the client's redirect URIs, and waits for its `ready` line; stdout and
    stderr go to log_path."""
    # The script reads its accounts from a file; keep it until stop().
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="oidc-accounts-", delete=False) as f:
        json.dump(accounts, f)
    accounts_file = Path(f.name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_bytes(b"")  # a fresh log, so the ready line we find is this run's
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(NODE), str(HERE / "oidc_provider.mjs"), "--port", str(port), "--client-id", client_id,
             "--client-secret", client_secret, *(a for uri in redirect_uris for a in ("--redirect-uri", uri)),
             "--accounts", str(accounts_file)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    provider = OidcProvider(proc, f"http://127.0.0.1:{port}", log_path, accounts_file)
    # The ready line is printed once the socket listens; poll the log for it.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"ready {provider.issuer}" in provider.log():
            return provider
        if proc.poll() is not None:
            provider.stop()
            raise RuntimeError(f"oidc_provider.mjs exited with {proc.returncode}:\n{provider.log()}")
        time.sleep(0.05)
    provider.stop()
    raise RuntimeError(f"oidc_provider.mjs not ready in {timeout} s:\n{provider.log()}")


def configure_sso(server, sso_toml: str) -> None:
    """Gives a not-yet-started test server a config file with `sso_toml`
    (the `[global.sso]` tables) and a client base URL on its own port, so
    callbacks come back to it."""
    config = server.data_dir / "conduit.toml"
    config.write_text(
        '[global]\nserver_name = "localhost"\n'
        f'[global.well_known]\nclient = "{server.url}"\n' + sso_toml
    )
    server.env["CONDUIT_CONFIG"] = str(config)


def browser_login(server, path: str, login: str, name: str, pick: str | None = None, click: str | None = None) -> dict:
    """Runs js/sso_login.mjs: one sign-in in headless Chromium starting at
    `path` on the server; returns what it saw (see the script)."""
    from conftest import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    job = {"url": server.url, "path": path, "login": login, "pick": pick, "click": click,
           "artifacts": str(ARTIFACTS), "name": name}
    result = subprocess.run([str(NODE), str(HERE.parent / "js" / "sso_login.mjs"), json.dumps(job)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# The app's address in the browser tests; js/sso_login.mjs answers for it.
CLIENT_REDIRECT = "http://client.invalid/app?x=1"


def login_path(idp: str | None = None, redirect: str = CLIENT_REDIRECT) -> str:
    from urllib.parse import quote

    suffix = f"/{idp}" if idp else ""
    return f"/_matrix/client/v3/login/sso/redirect{suffix}?redirectUrl={quote(redirect, safe='')}"


def token_login(server, token: str):
    return server.request("POST", "/_matrix/client/v3/login", json={"type": "m.login.token", "token": token})
