"""Fixtures that run the real `conduit` binary on a free port over a fresh database."""

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import nio
import pytest
import requests

# matrix-nio[e2e] turns end-to-end encryption on by default, and an
# encrypting nio refuses `room_send` to a room it has not synced yet. Only
# e2ee_nio.py wants encryption, and it passes its own config.
_nio_client_init = nio.AsyncClient.__init__


def _plain_nio_by_default(self, *args, **kwargs):
    if len(args) < 5 and "config" not in kwargs:
        kwargs["config"] = nio.AsyncClientConfig(encryption_enabled=False)
    _nio_client_init(self, *args, **kwargs)


nio.AsyncClient.__init__ = _plain_nio_by_default

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def binary() -> Path:
    explicit = os.environ.get("CONDUIT_BIN")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR") or str(ROOT / "target")
    return Path(target) / "debug" / "conduit"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without CONDUIT_* settings (nor an
    SSL_CERT_FILE a test may set), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_") and k != "SSL_CERT_FILE"}
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One homeserver process; start/stop/kill it as often as a test likes."""

    def __init__(self, data_dir: Path, env: dict[str, str], name: str):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://{env.get('CONDUIT_ADDRESS', '127.0.0.1')}:{self.port}"
        self.server_name = env.get("CONDUIT_SERVER_NAME", "localhost")
        self.log_path = ARTIFACTS / f"{name}.log"
        self.env = {
            **clean_env(),
            "CONDUIT_PORT": str(self.port),
            "CONDUIT_DATABASE_PATH": str(data_dir / "db"),
            "CONDUIT_ALLOW_REGISTRATION": "true",
            "CONDUIT_REGISTRATION_REQUIRES_TOKEN": "false",
            "CONDUIT_LOG": "info",
            **env,
        }
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "Server":
        ARTIFACTS.mkdir(exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(binary())], env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                requests.get(self.url + "/_matrix/client/versions", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("server did not start in time:\n" + self.log())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # Raw HTTP helpers for tests that check exact responses.
    def request(self, method: str, path: str, token: str | None = None, **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def register(self, username: str, password: str = "correct horse battery", **extra) -> dict:
        body = {"username": username, "password": password, "auth": {"type": "m.login.dummy"}, **extra}
        r = self.request("POST", "/_matrix/client/v3/register", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def login(self, username: str, password: str = "correct horse battery", **extra):
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": username},
            "password": password,
            **extra,
        }
        return self.request("POST", "/_matrix/client/v3/login", json=body)


@pytest.fixture
def make_server(tmp_path, request):
    """Builds servers with extra CONDUIT_* settings; every one is stopped at the end."""
    servers: list[Server] = []

    def make(env: dict[str, str] | None = None, start: bool = True, data_dir: Path | None = None) -> Server:
        name = f"{request.node.name}-{len(servers)}"
        if data_dir is None:
            data_dir = tmp_path / f"server{len(servers)}"
            data_dir.mkdir()
        server = Server(data_dir, env or {}, name)
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.kill()


@pytest.fixture
def server(make_server) -> Server:
    return make_server()


def unique(prefix: str = "user") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"
