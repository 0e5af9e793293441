"""A homeserver written in the suite for hostile-input tests: it serves its
signing key over TLS, signs requests and events with it (Synapse's own
event-signing code, from the Synapse package the suite installs), and
sends whatever a test makes it send, well-formed or not.
"""

import copy
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import requests
import signedjson.key
import signedjson.sign
from canonicaljson import encode_canonical_json
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
from synapse.crypto.event_signing import add_hashes_and_signatures
from synapse.events import make_event_from_dict
from unpaddedbase64 import encode_base64

from conftest import free_port
from federation import make_certificate


class FakePeer:
    def __init__(self, directory: Path, server_name: str | None = None):
        self.port = free_port()
        # A name without a port is found through `/.well-known` (see
        # `serve_well_known`); by default the peer is its IP literal.
        self.server_name = server_name or f"127.0.0.1:{self.port}"
        self.key = signedjson.key.generate_signing_key("fake1")
        self.key_id = f"ed25519:{self.key.version}"
        self.received: list[dict] = []  # transactions sent to us
        self.events: dict[str, dict] = {}  # events we made, by id, for /event
        self.device_lists: dict[str, dict] = {}  # user id -> its /user/devices answer
        self.device_list_hits = 0
        cert, key = make_certificate(directory)
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status: int, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/.well-known/matrix/server":
                    peer.well_known_hits += 1
                    return self._answer(200, {"m.server": f"127.0.0.1:{peer.port}"})
                if self.path.startswith("/_matrix/key/v2/server"):
                    peer.key_hits += 1
                    return self._answer(200, peer.key_response())
                if self.path.startswith("/_matrix/federation/v1/user/devices/"):
                    user = requests.utils.unquote(self.path.rsplit("/", 1)[1])
                    if user in peer.device_lists:
                        peer.device_list_hits += 1
                        return self._answer(200, peer.device_lists[user])
                if self.path.startswith("/_matrix/federation/v1/event/"):
                    event_id = requests.utils.unquote(self.path.rsplit("/", 1)[1])
                    if event_id in peer.events:
                        return self._answer(200, {"origin": peer.server_name, "origin_server_ts": 0,
                                                  "pdus": [peer.events[event_id]]})
                return self._answer(404, {"errcode": "M_NOT_FOUND", "error": "fake peer"})

            def do_PUT(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.startswith("/_matrix/federation/v1/send/"):
                    peer.received.append(body)
                    return self._answer(200, {"pdus": {}})
                return self._answer(404, {"errcode": "M_UNRECOGNIZED", "error": "fake peer"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if "/get_missing_events/" in self.path:
                    return self._answer(200, {"events": []})
                return self._answer(404, {"errcode": "M_UNRECOGNIZED", "error": "fake peer"})

        self.well_known_hits = 0
        self.key_hits = 0
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.handler = Handler
        self.servers = [self._serve(self.port)]

    def _serve(self, port: int) -> ThreadingHTTPServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", port), self.handler)
        httpd.socket = self.context.wrap_socket(httpd.socket, server_side=True)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd

    def serve_well_known(self):
        """Also answers on 127.0.0.1:443, where other servers look for the
        `/.well-known/matrix/server` of a name without a port."""
        self.servers.append(self._serve(443))

    def close(self):
        for httpd in self.servers:
            httpd.shutdown()
            httpd.server_close()

    def key_response(self) -> dict:
        body = {
            "server_name": self.server_name,
            "valid_until_ts": int(time.time() * 1000) + 3600_000,
            "verify_keys": {self.key_id: {"key": encode_base64(self.key.verify_key.encode())}},
            "old_verify_keys": {},
        }
        return signedjson.sign.sign_json(body, self.server_name, self.key)

    # Requests to the server under test.

    def x_matrix(self, method: str, uri: str, destination: str, body=None, key=None,
                 origin: str | None = None) -> str:
        origin = origin or self.server_name
        signed = {"method": method, "uri": uri, "origin": origin, "destination": destination}
        if body is not None:
            signed["content"] = body
        key = key or self.key
        key_id = f"ed25519:{key.version}"
        signed = signedjson.sign.sign_json(signed, origin, key)
        sig = signed["signatures"][origin][key_id]
        return f'X-Matrix origin="{origin}",destination="{destination}",key="{key_id}",sig="{sig}"'

    def request(self, server, method: str, path: str, body=None, **auth) -> requests.Response:
        """A signed request to `server` (its TLS federation port)."""
        headers = {"Authorization": self.x_matrix(method, path, server.server_name, body, **auth)}
        data = None if body is None else encode_canonical_json(body)
        if data is not None:
            headers["Content-Type"] = "application/json"
        return requests.request(method, f"https://{server.server_name}{path}", data=data,
                                headers=headers, verify=False, timeout=30)

    # Events.

    def sign_event(self, event: dict, version: str = "11") -> tuple[str, dict]:
        """Adds hashes and our signature; returns (event id, event)."""
        room_version = KNOWN_ROOM_VERSIONS[version]
        event = copy.deepcopy(event)
        add_hashes_and_signatures(room_version, event, self.server_name, self.key)
        event_id = make_event_from_dict(copy.deepcopy(event), room_version).event_id
        self.events[event_id] = event
        return event_id, event

    def join(self, server, room_id: str, user_id: str, version: str = "11") -> tuple[str, dict]:
        r = self.request(server, "GET",
                         f"/_matrix/federation/v1/make_join/{quote(room_id)}/{quote(user_id)}?ver={version}")
        assert r.status_code == 200, r.text
        template = r.json()["event"]
        template["origin_server_ts"] = int(time.time() * 1000)
        event_id, event = self.sign_event(template, version)
        r = self.request(server, "PUT", f"/_matrix/federation/v2/send_join/{quote(room_id)}/{quote(event_id)}",
                         event)
        assert r.status_code == 200, r.text
        return event_id, r.json()

    def send_pdus(self, server, pdus: list[dict], edus: list[dict] | None = None) -> requests.Response:
        txn = f"t{time.time_ns()}"
        body = {"origin": self.server_name, "origin_server_ts": int(time.time() * 1000),
                "pdus": pdus, "edus": edus or []}
        return self.request(server, "PUT", f"/_matrix/federation/v1/send/{txn}", body)

    def new_event(self, room_id: str, sender: str, kind: str, content: dict, prev_events: list[str],
                  auth_events: list[str], depth: int, state_key: str | None = None) -> dict:
        event = {
            "room_id": room_id, "sender": sender, "type": kind, "content": content,
            "origin_server_ts": int(time.time() * 1000), "depth": depth,
            "prev_events": prev_events, "auth_events": auth_events,
        }
        if state_key is not None:
            event["state_key"] = state_key
        return event
