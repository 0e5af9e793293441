"""Federation peers for the black-box suite: a real Synapse from PyPI on
loopback, and our own server set up to federate with it.

Both servers use IP-literal server names (`127.0.0.1:PORT`), which skip
`.well-known` and SRV: each connects straight to the other's TLS port. The
certificates are self-signed, so both are told not to check them.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from conftest import ARTIFACTS, free_port

VENV_BIN = Path(sys.executable).parent


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "tls.crt", directory / "tls.key"
    if not cert.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )
    return cert, key


def federation_env(directory: Path, host: str = "127.0.0.1") -> dict[str, str]:
    """CONDUIT_* settings for a server that federates over TLS on loopback
    (`host` another loopback address when a test needs a name of its own)."""
    cert, key = make_certificate(directory)
    port = free_port()
    return {
        "CONDUIT_ADDRESS": host,
        "CONDUIT_SERVER_NAME": f"{host}:{port}",
        "CONDUIT_FEDERATION_PORT": str(port),
        "CONDUIT_TLS__CERTS": str(cert),
        "CONDUIT_TLS__KEY": str(key),
        "CONDUIT_FEDERATION_VERIFY_CERTIFICATES": "false",
        "CONDUIT_TRUSTED_SERVERS": "[]",
        "CONDUIT_LOG": "info,conduit_service::federation=debug",
        "CONDUIT_ALLOW_PUBLIC_ROOMS_OVER_FEDERATION": "true",
    }


class Client:
    """The few client-server calls the federation tests make, on any server."""

    def __init__(self, base_url: str, user_id: str, token: str):
        self.base_url = base_url
        self.user_id = user_id
        self.token = token
        self.next_batch = None
        self.txn = 0

    def call(self, method: str, path: str, expect: int | None = 200, **kwargs):
        r = requests.request(method, self.base_url + path,
                             headers={"Authorization": f"Bearer {self.token}"}, timeout=60, **kwargs)
        if expect is not None:
            assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        return r

    def create_room(self, **body) -> str:
        return self.call("POST", "/_matrix/client/v3/createRoom", json=body).json()["room_id"]

    def join(self, room: str, via: list[str] | None = None, expect: int = 200):
        query = "".join(f"&via={v}&server_name={v}" for v in via or [])
        return self.call("POST", f"/_matrix/client/v3/join/{requests.utils.quote(room)}?{query[1:]}",
                         json={}, expect=expect)

    def send(self, room: str, body: str) -> str:
        self.txn += 1
        path = f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t{time.time_ns()}{self.txn}"
        return self.call("PUT", path, json={"msgtype": "m.text", "body": body}).json()["event_id"]

    def state(self, room: str, kind: str, state_key: str = "", content: dict | None = None, expect=200):
        path = f"/_matrix/client/v3/rooms/{room}/state/{kind}/{state_key}"
        if content is None:
            return self.call("GET", path, expect=expect)
        return self.call("PUT", path, json=content, expect=expect)

    def membership(self, room: str, action: str, user_id: str | None = None, expect: int = 200):
        body = {"user_id": user_id} if user_id else {}
        return self.call("POST", f"/_matrix/client/v3/rooms/{room}/{action}", json=body, expect=expect)

    def sync(self, timeout_ms: int = 0) -> dict:
        params = {"timeout": timeout_ms}
        if self.next_batch:
            params["since"] = self.next_batch
        body = self.call("GET", "/_matrix/client/v3/sync", params=params).json()
        self.next_batch = body["next_batch"]
        return body

    def wait_for(self, predicate, what: str, timeout: float = 30.0):
        """Syncs until `predicate(sync_body)` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = predicate(self.sync(timeout_ms=1000))
            if found:
                return found
        raise AssertionError(f"{self.user_id}: timed out waiting for {what}")

    def wait_for_event(self, room: str, match, what: str, timeout: float = 30.0) -> dict:
        def find(body):
            events = body.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {}).get("events", [])
            return next((e for e in events if match(e)), None)
        return self.wait_for(find, what, timeout)

    def wait_for_message(self, room: str, text: str, timeout: float = 30.0) -> dict:
        return self.wait_for_event(
            room, lambda e: e.get("content", {}).get("body") == text, f"message {text!r}", timeout)

    def messages(self, room: str, limit: int = 50) -> list[dict]:
        return self.call("GET", f"/_matrix/client/v3/rooms/{room}/messages",
                         params={"dir": "b", "limit": limit}).json()["chunk"]


def register(base_url: str, name: str, password: str = "correct horse battery") -> Client:
    body = {"username": name, "password": password, "auth": {"type": "m.login.dummy"}}
    r = requests.post(base_url + "/_matrix/client/v3/register", json=body, timeout=30)
    if r.status_code == 401:  # Synapse asks for the dummy stage in a session
        body["auth"]["session"] = r.json()["session"]
        r = requests.post(base_url + "/_matrix/client/v3/register", json=body, timeout=30)
    assert r.status_code == 200, r.text
    answer = r.json()
    return Client(base_url, answer["user_id"], answer["access_token"])


class Synapse:
    """A Synapse homeserver on loopback: TLS federation port, plain client port."""

    def __init__(self, directory: Path, name: str, trusted_key_servers: list[str] | None = None):
        self.trusted_key_servers = trusted_key_servers or []
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fed_port = free_port()
        self.client_port = free_port()
        self.server_name = f"127.0.0.1:{self.fed_port}"
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.log_path = ARTIFACTS / f"synapse-{name}.log"
        self.proc: subprocess.Popen | None = None
        self._write_config()

    def _write_config(self):
        cert, key = make_certificate(self.dir)
        limit = {"per_second": 10000, "burst_count": 10000}
        config = {
            "server_name": self.server_name,
            "pid_file": str(self.dir / "homeserver.pid"),
            "listeners": [
                {"port": self.fed_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": True,
                 "resources": [{"names": ["federation"], "compress": False}]},
                {"port": self.client_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                 "resources": [{"names": ["client"], "compress": False}]},
            ],
            "tls_certificate_path": str(cert),
            "tls_private_key_path": str(key),
            "database": {"name": "sqlite3", "args": {"database": str(self.dir / "homeserver.db")}},
            "log_config": str(self.dir / "log.yaml"),
            "media_store_path": str(self.dir / "media"),
            "signing_key_path": str(self.dir / "signing.key"),
            "macaroon_secret_key": "macaroon-secret",
            "form_secret": "form-secret",
            "registration_shared_secret": "shared-secret",
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "report_stats": False,
            # No notary key is pinned: Synapse fetches it from the notary over
            # TLS it cannot check on this test bed, and must be told that is fine.
            "trusted_key_servers": [{"server_name": name, "accept_keys_insecurely": True}
                                    for name in self.trusted_key_servers],
            "suppress_key_server_warning": True,
            "federation_verify_certificates": False,
            "ip_range_blacklist": [],
            "presence": {"enabled": True},
            "allow_public_rooms_over_federation": True,
            "room_list_publication_rules": [{"action": "allow"}],
            "rc_message": limit,
            "rc_registration": limit,
            "rc_login": {"address": limit, "account": limit, "failed_attempts": limit},
            "rc_joins": {"local": limit, "remote": limit},
            "rc_joins_per_room": limit,
            "rc_invites": {"per_room": limit, "per_user": limit, "per_issuer": limit},
            "rc_presence": {"per_user": limit},
            "rc_federation": {"window_size": 1000, "sleep_limit": 1000, "sleep_delay": 1,
                              "reject_limit": 1000, "concurrent": 100},
            "federation_rr_transactions_per_room_per_second": 1000,
            # A peer that was down is retried within seconds, not minutes.
            "federation": {"destination_min_retry_interval": "1s", "destination_retry_multiplier": 1,
                           "destination_max_retry_interval": "2s"},
        }
        (self.dir / "homeserver.yaml").write_text(yaml.safe_dump(config))
        ARTIFACTS.mkdir(exist_ok=True)
        log_config = {
            "version": 1,
            "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "filename": str(self.log_path),
                                  "formatter": "plain"}},
            "root": {"level": "INFO", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }
        (self.dir / "log.yaml").write_text(yaml.safe_dump(log_config))

    def start(self) -> "Synapse":
        config = str(self.dir / "homeserver.yaml")
        python = str(VENV_BIN / "python")
        if not (self.dir / "signing.key").exists():
            subprocess.run([python, "-m", "synapse.app.homeserver", "-c", config, "--generate-keys"],
                           check=True, capture_output=True, cwd=self.dir)
        out = open(self.dir / "stdout.log", "ab")
        self.proc = subprocess.Popen([python, "-m", "synapse.app.homeserver", "-c", config],
                                     stdout=out, stderr=subprocess.STDOUT, cwd=self.dir,
                                     env={**os.environ, "SYNAPSE_ASYNC_IO_REACTOR": "0"})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"synapse exited: {(self.dir / 'stdout.log').read_text()[-3000:]}")
            try:
                requests.get(self.url + "/_matrix/client/versions", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError("synapse did not start in time")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def register(self, name: str) -> Client:
        return register(self.url, name)


def synapse_peer(name: str):
    """A module-scoped fixture: one real Synapse for a test file's tests
    (its log is artifacts/synapse-NAME.log). Assign it as `synapse`."""

    @pytest.fixture(scope="module")
    def synapse(tmp_path_factory):
        peer = Synapse(tmp_path_factory.mktemp("synapse"), name).start()
        yield peer
        peer.stop()

    return synapse


@pytest.fixture
def ours(make_server, tmp_path):
    """Our server, federating over TLS (import this fixture by name)."""
    return make_server(federation_env(tmp_path))

