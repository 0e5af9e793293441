"""Drives the matrix-rust-sdk client program (sdk-client/, built by
`setup`): one process per logged-in device, one command per line, one JSON
answer per line. Works against any homeserver URL, so the same scenario
runs against our server and against Synapse."""

import json
import os
import queue
import subprocess
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent


def binary() -> Path:
    if os.environ.get("SDK_CLIENT_BIN"):
        return Path(os.environ["SDK_CLIENT_BIN"])
    target = os.environ.get("SDK_CLIENT_TARGET_DIR", str(Path.home() / ".cache/conduit/sdk-target"))
    return Path(target) / "debug" / "sdk-client"


class SdkClient:
    """`user` "--oauth" with `password` "login" or "create" logs in through
    the OAuth 2.0 API: `authorize(url)` plays the browser and returns the
    address the server sent it back to."""

    def __init__(self, homeserver: str, user: str, password: str, log_path: Path, authorize=None):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        env = {**os.environ, "RUST_LOG": os.environ.get("SDK_CLIENT_LOG", "warn,matrix_sdk::sliding_sync=info")}
        self.process = subprocess.Popen(
            [str(binary()), homeserver, user, password],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
        )
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        # Events (`logged_in`, `sync_state`) come unasked; answers carry `ok`.
        self.events: list[dict] = []
        if user == "--oauth":
            url = self._next(lambda m: m.get("event") == "authorize", 60)["url"]
            self.process.stdin.write((authorize(url) + "\n").encode())
            self.process.stdin.flush()
        self.login = self._next(lambda m: m.get("event") == "logged_in", 60)

    def _read(self):
        for line in self.process.stdout:
            self._lines.put(json.loads(line))
        self._lines.put(None)

    def _next(self, wanted, timeout: float) -> dict:
        while True:
            try:
                message = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"sdk-client said nothing for {timeout} s; log:\n{self.log()}")
            if message is None:
                raise AssertionError(f"sdk-client ended ({self.process.wait()}); log:\n{self.log()}")
            if wanted(message):
                return message
            self.events.append(message)

    def run(self, command: str, timeout: float = 90):
        """Runs a command; its result, or an AssertionError with the SDK's log."""
        self.process.stdin.write((command + "\n").encode())
        self.process.stdin.flush()
        answer = self._next(lambda m: "ok" in m, timeout)
        assert answer["ok"], f"{command}: {answer['error']}\nlog:\n{self.log()[-4000:]}"
        return answer["result"]

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()
