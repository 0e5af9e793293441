"""A synthetic big room hosted by a fake federation that the black-box tests
and the benchmark join: N members spread over a few hundred server names,
all served by one process.

Every server name is `127.1.X.Y:PORT`, a loopback address of its own on one
shared port (Linux routes all of 127.0.0.0/8 to `lo`), so the joining server
reaches each fake server separately and fetches each one's signing key from
its own `/_matrix/key/v2/server`. The first name hosts the room: it answers
`make_join`, `send_join`, `/state_ids`, `/event`, `/event_auth`,
`/backfill`, `/get_missing_events` and `/key/v2/query` (as a notary for all
the names), and sends traffic into the room over `/send`.

The history is realistic in shape: the creator's power levels change a few
times (moderators are added), a few hundred topic changes, members who leave,
messages, and forks that a later event merges. Forks never touch the same
state key, so the state after any event is the last value of each key; a test
that wants a real state-resolution conflict makes one with `fork`.

Events are hashed and signed here (content hash, redaction with Synapse's
own Rust `redact_event_dict`, ed25519 with PyNaCl): about 0.1 ms an event,
so a 30,000-member room is made in a few seconds.
"""

import copy
import hashlib
import json
import random
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import nacl.signing
import requests
from canonicaljson import encode_canonical_json
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
from synapse.synapse_rust.events import redact_event_dict
from unpaddedbase64 import encode_base64

from conftest import free_port
from federation import make_certificate

KEY_ID = "ed25519:big"


def server_names(count: int, port: int) -> list[str]:
    """`count` names on loopback addresses of their own, all on `port`."""
    return [f"127.1.{i // 250}.{i % 250 + 1}:{port}" for i in range(count)]


class FakeServer:
    """One server name and its signing key (seeded by the name: the same
    name signs alike in every run)."""

    def __init__(self, name: str):
        self.name = name
        self.key = nacl.signing.SigningKey(hashlib.sha256(name.encode()).digest())

    def public_key(self) -> str:
        return encode_base64(self.key.verify_key.encode())

    def sign(self, obj: dict) -> dict:
        """Signs a JSON object (its `signatures` and `unsigned` not signed)."""
        unsigned = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
        signature = encode_base64(self.key.sign(encode_canonical_json(unsigned)).signature)
        obj.setdefault("signatures", {}).setdefault(self.name, {})[KEY_ID] = signature
        return obj

    def key_response(self) -> dict:
        body = {
            "server_name": self.name,
            "valid_until_ts": int(time.time() * 1000) + 24 * 3600_000,
            "verify_keys": {KEY_ID: {"key": self.public_key()}},
            "old_verify_keys": {},
        }
        return self.sign(body)

    def x_matrix(self, method: str, uri: str, destination: str, body=None) -> str:
        signed = {"method": method, "uri": uri, "origin": self.name, "destination": destination}
        if body is not None:
            signed["content"] = body
        sig = self.sign(signed)["signatures"][self.name][KEY_ID]
        return f'X-Matrix origin="{self.name}",destination="{destination}",key="{KEY_ID}",sig="{sig}"'


@dataclass
class Event:
    event_id: str
    pdu: dict
    depth: int


@dataclass
class RoomState:
    """The room as the fake federation knows it."""

    version: str
    room_id: str
    events: dict[str, Event] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # in the order made
    state: dict[tuple[str, str], str] = field(default_factory=dict)  # after the extremities
    extremities: list[str] = field(default_factory=list)


class BigRoom:
    """The room and its fake federation: `members` members (the creator
    included) over `servers` server names; `start()` serves it."""

    def __init__(self, directory: Path, members: int, servers: int = 300, version: str = "10",
                 seed: int = 1, history_states: int = 300):
        self.port = free_port()
        self.servers = [FakeServer(n) for n in server_names(min(servers, members), self.port)]
        self.by_name = {s.name: s for s in self.servers}
        self.home = self.servers[0]
        self.room_version = KNOWN_ROOM_VERSIONS[version]
        self.rng = random.Random(seed)
        self.room = RoomState(version, f"!big{members}:{self.home.name}")
        self.received: list[dict] = []  # transactions sent to the fake federation
        self.delivered: dict[str, int] = {}  # PDUs received, by fake server
        self.joined: list[str] = []  # send_join events taken
        # What a test may make the next send_join answer carry.
        self.tamper: dict = {}
        self.hidden: set[str] = set()  # events /event pretends not to know
        self.requests: dict[str, int] = {}  # path kind -> count
        self.lock = threading.Lock()
        started = time.perf_counter()
        self._make_history(members, history_states)
        self.generation_s = time.perf_counter() - started
        self.cert, self.cert_key = make_certificate(directory)
        self.httpd: ThreadingHTTPServer | None = None

    # Users.

    def user(self, i: int) -> str:
        return f"@u{i}:{self.servers[i % len(self.servers)].name}"

    def server_of(self, user_id: str) -> FakeServer:
        return self.by_name[user_id.split(":", 1)[1]]

    def join_content(self, i: int) -> dict:
        content = {"membership": "join", "displayname": f"Member number {i}"}
        if i % 3 == 0:
            content["avatar_url"] = f"mxc://{self.servers[i % len(self.servers)].name}/avatar{i:08d}abcdefgh"
        return content

    @property
    def creator(self) -> str:
        return self.user(0)

    # Events.

    def make_event(self, sender: str, kind: str, content: dict, state_key: str | None = None,
                   prev_events: list[str] | None = None, auth_events: list[str] | None = None,
                   add: bool = True, signer: FakeServer | None = None) -> Event:
        """Hashes and signs an event by `sender` (its server signs), with the
        extremities as prev events and the auth events the rules ask for."""
        room = self.room
        prev = list(prev_events if prev_events is not None else room.extremities)
        depth = max((room.events[p].depth for p in prev if p in room.events), default=0) + 1
        pdu = {
            "room_id": room.room_id, "sender": sender, "type": kind, "content": content,
            "origin_server_ts": int(time.time() * 1000), "depth": depth,
            "prev_events": prev,
            "auth_events": auth_events if auth_events is not None else self.auth_for(
                sender, kind, state_key, content.get("membership", "join")),
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        event = self.finish(pdu, signer or self.server_of(sender))
        if add:
            self.add(event)
        return event

    def finish(self, pdu: dict, signer: FakeServer) -> Event:
        """Content hash, signature and reference-hash event id."""
        pdu = dict(pdu)
        pdu.pop("hashes", None)
        pdu.pop("signatures", None)
        content_hash = hashlib.sha256(encode_canonical_json(pdu)).digest()
        pdu["hashes"] = {"sha256": encode_base64(content_hash)}
        redacted = redact_event_dict(self.room_version, pdu)
        redacted.pop("unsigned", None)
        signature = encode_base64(signer.key.sign(encode_canonical_json(redacted)).signature)
        pdu["signatures"] = {signer.name: {KEY_ID: signature}}
        return Event(self.event_id(pdu), pdu, pdu["depth"])

    def event_id(self, pdu: dict) -> str:
        redacted = redact_event_dict(self.room_version, pdu)
        redacted.pop("signatures", None)
        redacted.pop("unsigned", None)
        digest = hashlib.sha256(encode_canonical_json(redacted)).digest()
        return "$" + encode_base64(digest, urlsafe=True)

    def add(self, event: Event, extremity: bool = True) -> None:
        room = self.room
        room.events[event.event_id] = event
        room.order.append(event.event_id)
        pdu = event.pdu
        if "state_key" in pdu:
            room.state[(pdu["type"], pdu["state_key"])] = event.event_id
        if extremity:
            prev = set(pdu["prev_events"])
            room.extremities = [e for e in room.extremities if e not in prev] + [event.event_id]

    def auth_for(self, sender: str, kind: str, state_key: str | None, membership: str = "join") -> list[str]:
        state = self.room.state
        wanted = [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", sender)]
        if kind == "m.room.member" and membership in ("join", "invite", "knock"):
            wanted.append(("m.room.join_rules", ""))
            if state_key and state_key != sender:
                wanted.append(("m.room.member", state_key))
        return [state[k] for k in wanted if k in state]

    def _make_history(self, members: int, history_states: int) -> None:
        creator = self.creator
        create_content = {"creator": creator, "room_version": self.room.version}
        self.make_event(creator, "m.room.create", create_content, "", prev_events=[])
        self.make_event(creator, "m.room.member", {"membership": "join"}, creator)
        self.power = {"users": {creator: 100}, "users_default": 0, "events_default": 0,
                      "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0,
                      "events": {"m.room.power_levels": 100, "m.room.name": 50}}
        self.make_event(creator, "m.room.power_levels", copy.deepcopy(self.power), "")
        self.make_event(creator, "m.room.join_rules", {"join_rule": "public"}, "")
        self.make_event(creator, "m.room.history_visibility", {"history_visibility": "shared"}, "")
        self.make_event(creator, "m.room.name", {"name": f"Big room of {members}"}, "")
        every = max(1, members // max(1, history_states))
        for i in range(1, members):
            user = self.user(i)
            if i % 97 == 0:
                # A fork: a join on one branch, a message on the other, merged
                # by the next event.
                base = list(self.room.extremities)
                join = self.make_event(user, "m.room.member", self.join_content(i), user,
                                       prev_events=base)
                talk = self.make_event(creator, "m.room.message", {"msgtype": "m.text", "body": f"fork {i}"},
                                       prev_events=base)
                self.room.extremities = [join.event_id, talk.event_id]
            else:
                self.make_event(user, "m.room.member", self.join_content(i), user)
            if i % every == 0:
                self._history_step(i)
        # Some members left after joining (their joins stay in the auth chain).
        self.left = set(range(3, members, 53))
        for i in sorted(self.left):
            self.make_event(self.user(i), "m.room.member", {"membership": "leave"}, self.user(i))
        self.members = members

    def _history_step(self, i: int) -> None:
        creator = self.creator
        if self.rng.random() < 0.1:
            # A moderator more: a new power levels event in every later auth.
            self.power["users"][self.user(i)] = 50
            self.make_event(creator, "m.room.power_levels", copy.deepcopy(self.power), "")
        elif i % 2:
            self.make_event(creator, "m.room.topic", {"topic": f"topic {i}"}, "")
        else:
            self.make_event(self.user(i), "m.room.message", {"msgtype": "m.text", "body": f"hello {i}"})

    # What send_join and the state endpoints answer.

    def state_ids(self) -> list[str]:
        return list(self.room.state.values())

    def auth_chain(self, event_ids) -> list[str]:
        """Every event reachable through auth events from `event_ids`, the
        events themselves left out."""
        events = self.room.events
        seen: set[str] = set()
        stack = [a for e in event_ids for a in events[e].pdu["auth_events"]]
        while stack:
            event_id = stack.pop()
            if event_id in seen or event_id not in events:
                continue
            seen.add(event_id)
            stack.extend(events[event_id].pdu["auth_events"])
        return [e for e in self.room.order if e in seen]

    def pdus(self, event_ids) -> list[dict]:
        return [self.room.events[e].pdu for e in event_ids]

    def send_join_answer(self, join: dict, omit_members: bool) -> bytes:
        state = self.state_ids()
        auth = self.auth_chain(state)
        state_pdus = self.pdus(state)
        auth_pdus = self.pdus(auth)
        tamper = self.tamper
        if "forge_member" in tamper:
            # A member event signed with a key its server does not have.
            index = next(i for i, p in enumerate(state_pdus)
                         if p["type"] == "m.room.member" and p["state_key"] == tamper["forge_member"])
            forged = copy.deepcopy(state_pdus[index])
            wrong = FakeServer("not-" + self.server_of(forged["sender"]).name)
            forged["signatures"] = {}
            bad = self.finish(forged, wrong)
            bad.pdu["signatures"] = {self.server_of(forged["sender"]).name: bad.pdu["signatures"][wrong.name]}
            state_pdus[index] = bad.pdu
        if "unauthorised_name" in tamper:
            # A name set by a member without the power to: it fails auth.
            user = tamper["unauthorised_name"]
            bad = self.make_event(user, "m.room.name", {"name": "set without power"}, "", add=False)
            state_pdus = [p for p in state_pdus if p["type"] != "m.room.name"] + [bad.pdu]
        if tamper.get("truncate_auth_chain"):
            # The oldest power levels, which the early joins cite, are left out.
            dropped = {e for e in auth if self.room.events[e].pdu["type"] == "m.room.power_levels"}
            auth_pdus = [self.room.events[e].pdu for e in auth if e not in dropped]
            self.hidden = dropped if tamper.get("hide_dropped") else set()
        body = {"origin": self.home.name, "event": join, "members_omitted": False,
                "state": state_pdus, "auth_chain": auth_pdus,
                "servers_in_room": [s.name for s in self.servers]}
        data = json.dumps(body, separators=(",", ":")).encode()
        if "pad_to_bytes" in tamper:
            padding = tamper["pad_to_bytes"] - len(data)
            data = data[:-1] + b',"padding":"' + b"x" * max(0, padding) + b'"}'
        return data

    def take_join(self, pdu: dict) -> str:
        """Adds a join made through `make_join` to the room."""
        event_id = self.event_id(pdu)
        self.add(Event(event_id, pdu, pdu["depth"]))
        self.joined.append(event_id)
        return event_id

    # Traffic into the room.

    def send_pdus(self, target: str, pdus: list[dict], origin: FakeServer | None = None) -> requests.Response:
        origin = origin or self.server_of(pdus[0]["sender"])
        txn = f"t{time.time_ns()}"
        body = {"origin": origin.name, "origin_server_ts": int(time.time() * 1000), "pdus": pdus, "edus": []}
        path = f"/_matrix/federation/v1/send/{txn}"
        headers = {"Authorization": origin.x_matrix("PUT", path, target, body), "Content-Type": "application/json"}
        return requests.put(f"https://{target}{path}", data=encode_canonical_json(body), headers=headers,
                            verify=False, timeout=120)

    def member(self, k: int) -> int:
        """The k-th member still in the room (after the creator), cycling."""
        i = 1 + k % (self.members - 1)
        while i in self.left:
            i = 1 + i % (self.members - 1)
        return i

    def message(self, k: int, text: str) -> Event:
        """A message from the k-th member still in the room."""
        return self.make_event(self.user(self.member(k)), "m.room.message", {"msgtype": "m.text", "body": text})

    # Serving.

    def start(self) -> "BigRoom":
        room = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, status: int, body) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def me(self) -> FakeServer | None:
                host = self.connection.getsockname()[0]
                return room.by_name.get(f"{host}:{room.port}")

            def body(self):
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def do_GET(self):
                self.route("GET", None)

            def do_PUT(self):
                self.route("PUT", self.body())

            def do_POST(self):
                self.route("POST", self.body())

            def route(self, method: str, body):
                server = self.me()
                url = urlsplit(self.path)
                parts = [unquote(p) for p in url.path.split("/")]
                query = parse_qs(url.query)
                if server is None:
                    return self.answer(404, {"errcode": "M_NOT_FOUND", "error": "no such fake server"})
                kind = "/".join(parts[3:5]) if len(parts) > 4 else url.path
                with room.lock:
                    room.requests[kind] = room.requests.get(kind, 0) + 1
                try:
                    status, answer = room.handle(server, method, parts, query, body)
                except KeyError as e:
                    status, answer = 404, {"errcode": "M_NOT_FOUND", "error": f"unknown {e}"}
                self.answer(status, answer)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.cert_key)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 512

        self.httpd = Server(("0.0.0.0", self.port), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()

    def handle(self, server: FakeServer, method: str, parts: list[str], query: dict, body):
        """(status, answer) of a request to `server`; `parts` is the path split at `/`."""
        path = "/".join(parts)
        if path == "/_matrix/key/v2/server":
            return 200, server.key_response()
        if path == "/_matrix/key/v2/query" and method == "POST":
            wanted = body.get("server_keys", {})
            answers = []
            for name in wanted:
                if name in self.by_name:
                    answer = self.by_name[name].key_response()
                    answers.append(self.home.sign(answer) if name != self.home.name else answer)
            return 200, {"server_keys": answers}
        if not path.startswith("/_matrix/federation/"):
            return 404, {"errcode": "M_UNRECOGNIZED", "error": "fake federation"}
        api = parts[4]
        room = self.room
        with self.lock:
            if api == "make_join":
                user = parts[6]
                template = {
                    "room_id": room.room_id, "sender": user, "type": "m.room.member", "state_key": user,
                    "content": {"membership": "join"}, "origin_server_ts": int(time.time() * 1000),
                    "prev_events": list(room.extremities),
                    "auth_events": self.auth_for(user, "m.room.member", user),
                    "depth": max(room.events[e].depth for e in room.extremities) + 1,
                }
                return 200, {"event": template, "room_version": room.version}
            if api == "send_join" and method == "PUT":
                omit = query.get("omit_members", ["false"])[0] == "true"
                answer = self.send_join_answer(body, omit)
                self.take_join(body)
                return 200, answer
            if api == "state_ids":
                state = self.state_ids()
                return 200, {"pdu_ids": state, "auth_chain_ids": self.auth_chain(state)}
            if api == "state":
                state = self.state_ids()
                return 200, {"pdus": self.pdus(state), "auth_chain": self.pdus(self.auth_chain(state))}
            if api == "event":
                if parts[5] in self.hidden:
                    return 404, {"errcode": "M_NOT_FOUND", "error": "hidden by the test"}
                return 200, {"origin": self.home.name, "origin_server_ts": int(time.time() * 1000),
                             "pdus": [room.events[parts[5]].pdu]}
            if api == "event_auth":
                return 200, {"auth_chain": self.pdus(self.auth_chain([parts[6]]))}
            if api == "backfill":
                limit = int(query.get("limit", ["10"])[0])
                start = [room.order.index(e) for e in query.get("v", []) if e in room.events]
                end = max(start, default=len(room.order) - 1)
                chosen = room.order[max(0, end - limit + 1):end + 1]
                return 200, {"origin": self.home.name, "origin_server_ts": int(time.time() * 1000),
                             "pdus": self.pdus(chosen)}
            if api == "get_missing_events":
                earliest = set(body.get("earliest_events", []))
                found, stack = [], list(body.get("latest_events", []))
                seen = set()
                while stack and len(found) < int(body.get("limit", 10)):
                    event_id = stack.pop()
                    if event_id in seen or event_id in earliest or event_id not in room.events:
                        continue
                    seen.add(event_id)
                    event = room.events[event_id]
                    if event_id not in body.get("latest_events", []):
                        found.append(event)
                    stack.extend(event.pdu["prev_events"])
                found.sort(key=lambda e: e.depth)
                return 200, {"events": [e.pdu for e in found]}
            if api == "send" and method == "PUT":
                self.received.append(body)
                self.delivered[server.name] = self.delivered.get(server.name, 0) + len(body.get("pdus", []))
                for pdu in body.get("pdus", []):
                    event_id = self.event_id(pdu)
                    if pdu.get("room_id") == room.room_id and event_id not in room.events:
                        self.add(Event(event_id, pdu, pdu["depth"]))
                return 200, {"pdus": {}}
            if api in ("query", "user"):
                return 404, {"errcode": "M_NOT_FOUND", "error": "fake federation"}
        return 404, {"errcode": "M_UNRECOGNIZED", "error": f"fake federation: {api}"}

