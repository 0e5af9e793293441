"""Benchmark of the release binary (not a test); `scripts/bench` runs it.

Each section starts a fresh server (conftest's `Server`: a free port, a new
data directory, `CONDUIT_*` variables, no config file), measures, and stops
it with SIGTERM. Server CPU is utime+stime from /proc/<pid>/stat, memory is
VmRSS from /proc/<pid>/status. docs/benchmarks.md explains every figure.
"""

import argparse
import http.client
import json
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from conftest import ROOT, Server  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
SENDERS = 16
DEFAULT_PLAY = ROOT.parent / "shared" / "bench" / "romeo-and-juliet.txt"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Client:
    """One Matrix user; every thread that uses it gets its own keep-alive connection."""

    def __init__(self, server: Server, token: str | None = None, user_id: str | None = None):
        self.port = server.port
        self.token = token
        self.user_id = user_id
        self.local = threading.local()

    @classmethod
    def register(cls, server: Server, username: str) -> "Client":
        body = {"username": username, "password": "bench password", "auth": {"type": "m.login.dummy"}}
        r = cls(server).call("POST", "/_matrix/client/v3/register", body)
        return cls(server, r["access_token"], r["user_id"])

    def call(self, method: str, path: str, body: dict | None = None, **query) -> dict:
        if query:
            path += "?" + urlencode(query)
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                conn.request(method, path, data, headers)
                response = conn.getresponse()
                payload = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {payload[:500]!r}")
        return json.loads(payload)

    def create_room(self, **body) -> str:
        return self.call("POST", "/_matrix/client/v3/createRoom", body)["room_id"]

    def join(self, room_id: str) -> None:
        self.call("POST", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/join", {})

    def set_displayname(self, name: str) -> None:
        self.call("PUT", f"/_matrix/client/v3/profile/{quote(self.user_id, safe='')}/displayname", {"displayname": name})

    def send(self, room_id: str, text: str) -> str:
        path = f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/send/m.room.message/{uuid.uuid4().hex}"
        return self.call("PUT", path, {"msgtype": "m.text", "body": text})["event_id"]

    def sync(self, since: str | None = None, timeout_ms: int = 0) -> dict:
        query = {"timeout": timeout_ms} | ({"since": since} if since else {})
        return self.call("GET", "/_matrix/client/v3/sync", **query)

    def sliding_sync(self, body: dict, pos: str | None = None, timeout_ms: int = 0) -> dict:
        query = {"timeout": timeout_ms} | ({"pos": pos} if pos else {})
        return self.call("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", body, **query)


# What Element X's room list asks for (matrix-rust-sdk 0.18's request).
ROOM_LIST_STATE = [
    ["m.room.name", ""], ["m.room.encryption", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"],
    ["m.room.topic", ""], ["m.room.avatar", ""], ["m.room.canonical_alias", ""], ["m.room.power_levels", ""],
    ["org.matrix.msc3401.call.member", "*"], ["m.room.join_rules", ""], ["m.room.tombstone", ""],
    ["m.room.create", ""], ["m.room.history_visibility", ""], ["io.element.functional_members", ""],
    ["m.space.parent", "*"], ["m.space.child", "*"],
]


def sliding_sync_figures(user: "Client", rooms: list[str], samples: int) -> dict:
    """A room list of 20 as Element X asks for it, over a user's rooms:
    the first answer, then incremental answers after a send anywhere."""
    body = {
        "conn_id": "room-list",
        "lists": {"all_rooms": {"ranges": [[0, 19]], "timeline_limit": 1, "required_state": ROOM_LIST_STATE}},
        "extensions": {"account_data": {"enabled": True}, "receipts": {"enabled": True, "rooms": ["*"]},
                       "typing": {"enabled": True}},
    }
    start = time.perf_counter()
    answer = user.sliding_sync(body)
    first_s = time.perf_counter() - start
    assert len(answer["rooms"]) == 20 and answer["lists"]["all_rooms"]["count"] == len(rooms), answer["lists"]
    times = []
    for i in range(samples):
        user.send(random.choice(rooms), f"sliding {i}")
        start = time.perf_counter()
        answer = user.sliding_sync(body, answer["pos"])
        times.append(time.perf_counter() - start)
    p50, p99 = percentiles(times)
    return {"sliding_first_ms": first_s * 1000, "sliding_samples": len(times),
            "sliding_p50_ms": p50, "sliding_p99_ms": p99}


@contextmanager
def running_server(section: str, env: dict | None = None):
    """A fresh server over a fresh temporary database, stopped (SIGTERM) at the end."""
    with tempfile.TemporaryDirectory(prefix=f"conduit-bench-{section}-") as data_dir:
        server = Server(Path(data_dir), env or {}, f"bench-{section}")
        server.log_path.unlink(missing_ok=True)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def federating_server(data_dir: Path, name: str, log: str) -> Server:
    """A fresh started server that federates over TLS on loopback."""
    from federation import federation_env

    env = federation_env(data_dir / "tls")
    env["CONDUIT_LOG"] = log
    server = Server(data_dir, env, name)
    server.log_path.unlink(missing_ok=True)
    return server.start()


def sample(server: Server) -> tuple[float, float]:
    """The server's CPU seconds so far (utime+stime) and its resident memory in MiB."""
    pid = server.proc.pid
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # fields[0] is field 3, `state`
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    with open(f"/proc/{pid}/status") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return cpu, rss_kib / 1024


def measure(server: Server, events: int, work) -> dict:
    """Runs `work`, which makes `events` events, and reports rate and server CPU per event."""
    cpu0, _ = sample(server)
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    cpu1, rss = sample(server)
    return {
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "cpu_ms_per_event": (cpu1 - cpu0) * 1000 / events,
        "rss_mib": rss,
    }


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


def bench_idle(args) -> dict:
    with running_server("idle") as server:
        Client.register(server, "idle")
        time.sleep(2)
        return {"idle_rss_mib": sample(server)[1]}


def bench_sequential(args) -> dict:
    with running_server("sequential") as server:
        user = Client.register(server, "alice")
        room = user.create_room()
        return measure(server, args.sends, lambda: [user.send(room, f"message {i}") for i in range(args.sends)])


def bench_concurrent(args) -> dict:
    per_sender = args.sends // SENDERS
    with running_server("concurrent") as server, ThreadPoolExecutor(SENDERS) as pool:
        users = list(pool.map(lambda i: Client.register(server, f"user{i}"), range(SENDERS)))
        rooms = list(pool.map(lambda user: user.create_room(), users))

        def sender(user: Client, room: str) -> None:
            for i in range(per_sender):
                user.send(room, f"message {i}")

        return measure(server, per_sender * SENDERS, lambda: list(pool.map(sender, users, rooms)))


def bench_rooms(args) -> dict:
    with running_server("rooms") as server:
        user = Client.register(server, "busy")
        log(f"  creating {args.rooms} rooms")
        start = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            rooms = list(pool.map(lambda i: user.create_room(name=f"room {i}"), range(args.rooms)))
        create_s = time.perf_counter() - start

        start = time.perf_counter()
        since = user.sync()["next_batch"]
        initial_s = time.perf_counter() - start

        sync_times = []
        for i in range(args.sync_samples):
            user.send(random.choice(rooms), f"sync {i}")
            start = time.perf_counter()
            since = user.sync(since)["next_batch"]
            sync_times.append(time.perf_counter() - start)

        # One long-poll at a time on a thread of its own. The main thread sends
        # once the poll has had time to reach the server, find nothing new (as
        # long as the slowest incremental sync above) and wait.
        sync_p50, sync_p99 = percentiles(sync_times)
        settle = 0.05 + sync_p99 / 1000
        wake_times, missed = [], 0
        with ThreadPoolExecutor(1) as poller:
            for i in range(args.wake_samples):
                poll = poller.submit(lambda s=since: (user.sync(s, timeout_ms=30_000), time.perf_counter()))
                time.sleep(settle)
                room = random.choice(rooms)
                start = time.perf_counter()
                user.send(room, f"wake {i}")
                response, woke = poll.result()
                since = response["next_batch"]
                if woke < start or room not in response.get("rooms", {}).get("join", {}):
                    missed += 1
                else:
                    wake_times.append(woke - start)

        wake_p50, wake_p99 = percentiles(wake_times)
        sliding = sliding_sync_figures(user, rooms, args.sync_samples)
        return {
            "rooms": args.rooms,
            "create_rooms_s": create_s,
            "initial_sync_ms": initial_s * 1000,
            "sync_samples": len(sync_times),
            "sync_p50_ms": sync_p50,
            "sync_p99_ms": sync_p99,
            "wake_samples": len(wake_times),
            "wake_missed": missed,
            "wake_p50_ms": wake_p50,
            "wake_p99_ms": wake_p99,
            **sliding,
            "rss_mib": sample(server)[1],
        }


ACT_OR_SCENE = re.compile(r"(ACT [IVX]+|SCENE [IVX]+\..*)$")
ENTRANCE_OR_EXIT = re.compile(r"(Enter|Re-enter|Exit|Exeunt)\b")


def parse_play(text: str) -> tuple[list[tuple[str, str]], int]:
    """The spoken lines as (speaker, line) in play order, and how many stage directions were skipped.

    An unindented line is a heading: ACT and SCENE headings start stage
    directions, PROLOGUE starts the Chorus, any other heading (ROMEO, Nurse,
    First Musician) starts that speaker. Indented paragraphs follow. The first
    paragraph after a speaker's heading is speech unless it starts with
    Enter/Exit/Exeunt/Re-enter; in every later paragraph the first line is a
    stage direction ("They fight", "Exit Servant") and the rest is still the
    speaker's. Stage directions are not sent.
    """
    spoken, directions = [], 0
    speaker, first_paragraph, paragraph_start = None, False, True
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            paragraph_start = True
        elif not raw[0].isspace():
            speaker = "Chorus" if line == "PROLOGUE" else None if ACT_OR_SCENE.match(line) else line
            first_paragraph = True
        elif paragraph_start and (not first_paragraph or ENTRANCE_OR_EXIT.match(line)) or speaker is None:
            directions += 1
            paragraph_start = first_paragraph = False
        else:
            spoken.append((speaker, line))
            paragraph_start = first_paragraph = False
    return spoken, directions


def bench_play(args) -> dict | None:
    if not args.play.is_file():
        log(f"  {args.play} is missing: Romeo & Juliet skipped")
        return None
    spoken, directions = parse_play(args.play.read_text())
    if args.quick:
        spoken = spoken[: args.play_lines]
    # Speakers in order of their first line; "Nurse" and "NURSE" are one.
    names = {speaker.upper(): speaker.title() for speaker, _ in spoken}
    with running_server("play") as server:
        cpu0, _ = sample(server)
        start = time.perf_counter()
        users, room = {}, None
        for key in names:
            user = users[key] = Client.register(server, re.sub(r"[^a-z0-9]+", "_", key.lower()))
            user.set_displayname(names[key])
            if room is None:
                room = user.create_room(preset="public_chat", name="Verona", visibility="public")
            else:
                user.join(room)
        setup_s = time.perf_counter() - start
        sends = measure(server, len(spoken), lambda: [users[s.upper()].send(room, line) for s, line in spoken])
        cpu1, rss = sample(server)
        return {
            "speakers": len(names),
            "directions_skipped": directions,
            "setup_s": setup_s,
            "events": len(spoken),
            "send_s": sends["seconds"],
            "total_s": time.perf_counter() - start,
            "events_per_s": sends["events_per_s"],
            "cpu_ms_per_event": sends["cpu_ms_per_event"],
            "total_cpu_s": cpu1 - cpu0,
            "rss_mib": rss,
        }


def bench_federation(args) -> dict:
    """PDUs from one peer over /send, in a room of two (a local user and the
    peer's), 50 per transaction, one transaction after another. The peer
    signs every PDU before the clock starts, so only ingestion is timed."""
    from fake_peer import FakePeer

    with tempfile.TemporaryDirectory(prefix="conduit-bench-federation-") as data_dir:
        server = federating_server(Path(data_dir), "bench-federation", "warn")
        peer = FakePeer(Path(data_dir) / "peer")
        try:
            alice = Client.register(server, "alice")
            room = alice.create_room(preset="public_chat")
            sender = f"@bench:{peer.server_name}"
            prev, _ = peer.join(server, room, sender)
            state = {(e["type"], e.get("state_key")): e["event_id"] for e in alice.call(
                "GET", f"/_matrix/client/v3/rooms/{quote(room, safe='')}/state")}
            auth = [state[("m.room.create", "")], state[("m.room.power_levels", "")], prev]
            pdus = []
            for i in range(args.pdus):
                event = peer.new_event(room, sender, "m.room.message", {"msgtype": "m.text", "body": f"pdu {i}"},
                                       prev_events=[prev], auth_events=auth, depth=10 + i)
                prev, event = peer.sign_event(event)
                pdus.append(event)

            def work():
                for start in range(0, len(pdus), 50):
                    r = peer.send_pdus(server, pdus[start:start + 50])
                    errors = {k: v for k, v in r.json()["pdus"].items() if v}
                    if r.status_code != 200 or errors:
                        raise RuntimeError(f"/send: {r.status_code} {errors or r.text}")

            figures = measure(server, len(pdus), work)
            return {"pdus": figures["events"], "seconds": figures["seconds"],
                    "pdus_per_s": figures["events_per_s"], "cpu_ms_per_pdu": figures["cpu_ms_per_event"],
                    "rss_mib": figures["rss_mib"]}
        finally:
            peer.close()
            server.stop()

def peak_rss(server: Server) -> float:
    """The server's peak resident memory so far (VmHWM), in MiB."""
    with open(f"/proc/{server.proc.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def send_cpu_ms(server: Server, user: Client, room: str, sends: int, delivered) -> float:
    """Server CPU per local message send (no mentions) in `room`, counted
    until `delivered(sends)` says every server of the room has them all."""
    def work():
        for i in range(sends):
            user.send(room, f"message {i}")
        deadline = time.monotonic() + 120
        while not delivered(sends):
            if time.monotonic() > deadline:
                raise RuntimeError("the room's servers did not get every send")
            time.sleep(0.05)
    return measure(server, sends, work)["cpu_ms_per_event"]


class Receiver:
    """An HTTP endpoint on loopback counting what it is sent: pushes (one
    per POST) or appservice events (those of each PUT transaction). It
    answers 500 while `down`."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.count = 0
        self.transactions = 0
        self.down = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def handle_body(self, events: int) -> None:
                if receiver.down:
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.count += events
                receiver.transactions += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self.handle_body(1)

            def do_PUT(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.handle_body(len(body["events"]))

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.count < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"received {self.count} of {count}")
            time.sleep(0.01)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def bench_pushes(args) -> dict:
    members, sends = 100, args.push_sends
    receiver = Receiver()
    env = {"CONDUIT_URL_PREVIEW_IP_RANGE_ALLOWLIST": '["127.0.0.1/32"]'}
    try:
        with running_server("pushes", env) as server, ThreadPoolExecutor(4) as pool:
            sender = Client.register(server, "sender")
            room = sender.create_room(preset="public_chat")

            def member(i: int) -> None:
                user = Client.register(server, f"member{i}")
                user.call("POST", "/_matrix/client/v3/pushers/set", {
                    "kind": "http", "app_id": "bench", "pushkey": f"key{i}", "app_display_name": "bench",
                    "device_display_name": "bench", "lang": "en",
                    "data": {"url": receiver.url + "/_matrix/push/v1/notify"},
                })
                user.join(room)

            list(pool.map(member, range(members - 1)))
            expected = sends * (members - 1)

            def work():
                for i in range(sends):
                    sender.send(room, f"message {i}")
                receiver.wait_for(expected)

            figures = measure(server, sends, work)
            return {"members": members, "pushes": receiver.count, **figures}
    finally:
        receiver.close()


def bench_appservice(args) -> dict:
    events = args.as_events
    receiver = Receiver()
    with tempfile.TemporaryDirectory(prefix="conduit-bench-as-") as tmp:
        registration = Path(tmp) / "bridge.yaml"
        registration.write_text(f"""id: bench
url: {receiver.url}
as_token: bench-as-token
hs_token: bench-hs-token
sender_localpart: benchbot
namespaces:
  users: [{{exclusive: true, regex: "@bench_.*:localhost"}}]
""")
        env = {"CONDUIT_APPSERVICE_REGISTRATION_FILES": json.dumps([str(registration)])}
        try:
            with running_server("appservice", env) as server:
                bridge = Client(server, "bench-as-token")
                bridge.call("POST", "/_matrix/client/v3/register",
                            {"type": "m.login.application_service", "username": "bench_puppet"})
                puppet = "@bench_puppet:localhost"
                human = Client.register(server, "human")
                room = human.create_room(invite=[puppet])
                bridge.call("POST", f"/_matrix/client/v3/join/{quote(room, safe='')}", {}, user_id=puppet)
                receiver.wait_for(1)
                # The appservice is down while the events are sent: they
                # wait in its queue, and the clock runs from the restart
                # (which resumes the queue at once) to the last one taken.
                receiver.down = True
                for i in range(events):
                    human.send(room, f"message {i}")
                server.stop()
                receiver.down = False
                before = receiver.count
                transactions = receiver.transactions
                start = time.perf_counter()
                server.start()
                cpu0, _ = sample(server)
                receiver.wait_for(before + events)
                seconds = time.perf_counter() - start
                cpu1, rss = sample(server)
                return {
                    "events": events,
                    "transactions": receiver.transactions - transactions,
                    "seconds": seconds,
                    "events_per_s": events / seconds,
                    "cpu_ms_per_event": (cpu1 - cpu0) * 1000 / events,
                    "rss_mib": rss,
                }
        finally:
            receiver.close()


def bench_big_rooms(args) -> dict:
    import urllib3
    urllib3.disable_warnings()
    """Joins of synthetic rooms of 1k, 10k and 30k members (big_room.py: a
    fake federation of 300 server names) by a fresh server each, then the
    cost of living in the room: local sends, incoming PDUs, /members and
    the joining user's lazy-loading initial sync."""
    from big_room import BigRoom
    from fake_peer import FakePeer

    figures = {}
    for members in args.big_rooms:
        with tempfile.TemporaryDirectory(prefix="conduit-bench-bigroom-") as data_dir:
            log(f"  making a room of {members} members")
            big = BigRoom(Path(data_dir) / "peer", members).start()
            server = federating_server(Path(data_dir), f"bench-bigroom-{members}",
                                       "warn,conduit_service::federation::join=info")
            peer = FakePeer(Path(data_dir) / "small-peer")
            try:
                alice = Client.register(server, "alice")
                # The baseline: a room of two, the other member on a server
                # of its own (one destination per send).
                small = alice.create_room(preset="public_chat")
                peer.join(server, small, f"@friend:{peer.server_name}")

                def peer_has(sends: int, start=len(peer.received)) -> bool:
                    return sum(len(t.get("pdus", [])) for t in peer.received[start:]) >= sends
                baseline = send_cpu_ms(server, alice, small, args.big_sends, peer_has)
                cpu0, _ = sample(server)
                start = time.perf_counter()
                room = quote(big.room.room_id, safe="")
                alice.call("POST", f"/_matrix/client/v3/join/{room}?server_name={quote(big.home.name)}", {})
                join_s = time.perf_counter() - start
                cpu1, rss = sample(server)
                peak = peak_rss(server)
                log(f"  joined {members} members in {join_s:.1f} s")
                before = dict(big.delivered)

                def all_have(sends: int) -> bool:
                    return all(big.delivered.get(s.name, 0) - before.get(s.name, 0) >= sends
                               for s in big.servers)
                in_room = send_cpu_ms(server, alice, big.room.room_id, args.big_sends, all_have)

                pdus = [big.message(i, f"incoming {i}").pdu for i in range(args.big_sends)]
                cpu2, _ = sample(server)
                for at in range(0, len(pdus), 50):
                    chunk = pdus[at:at + 50]
                    r = big.send_pdus(server.server_name, chunk, origin=big.home)
                    errors = {k: v for k, v in r.json().get("pdus", {}).items() if v}
                    if r.status_code != 200 or errors:
                        raise RuntimeError(f"/send: {r.status_code} {errors or r.text[:300]}")
                cpu3, _ = sample(server)

                # A fork: two topics on branches from the same event, then
                # a message merging them (its state is a resolution).
                base = list(big.room.extremities)
                forks = [big.make_event(big.creator, "m.room.topic", {"topic": f"branch {b}"}, "",
                                        prev_events=base) for b in (1, 2)]
                big.room.extremities = [f.event_id for f in forks]
                merge = big.message(0, "merged")
                for event in (*forks, merge):
                    r = big.send_pdus(server.server_name, [event.pdu], origin=big.home)
                    if r.status_code != 200 or any(r.json()["pdus"].values()):
                        raise RuntimeError(f"fork: {r.status_code} {r.text[:300]}")
                cpu4, _ = sample(server)

                start = time.perf_counter()
                listed = alice.call("GET", f"/_matrix/client/v3/rooms/{room}/members")["chunk"]
                members_s = time.perf_counter() - start
                lazy = json.dumps({"room": {"state": {"lazy_load_members": True},
                                            "timeline": {"limit": 20, "lazy_load_members": True}}})
                start = time.perf_counter()
                alice.call("GET", "/_matrix/client/v3/sync", filter=lazy)
                sync_s = time.perf_counter() - start
                _, rss_after = sample(server)
                figures[members] = {
                    "join_s": join_s, "join_cpu_s": cpu1 - cpu0, "join_peak_rss_mib": peak,
                    "rss_after_join_mib": rss, "send_cpu_ms": in_room, "send_cpu_ms_2_members": baseline,
                    "pdu_in_cpu_ms": (cpu3 - cpu2) * 1000 / len(pdus),
                    "fork_merge_cpu_ms": (cpu4 - cpu3) * 1000, "members_listed": len(listed),
                    "members_ms": members_s * 1000, "lazy_initial_sync_ms": sync_s * 1000,
                    "rss_end_mib": rss_after, "room_generation_s": big.generation_s,
                }
                log(f"  {figures[members]}")
            finally:
                server.stop()
                big.close()
                peer.close()
    return {f"{key}@{members}": value for members, row in figures.items() for key, value in row.items()}


def bench_e2ee(args) -> dict:
    """Key queries and claims for 100 devices (10 users x 10 devices, each
    with signed device keys and one-time keys), and to-device fan-out to
    1,000 devices (10 users x 100 devices, addressed by `*`)."""
    import signedjson.key
    import signedjson.sign

    def login(server: Server, user: Client) -> Client:
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id},
                "password": "bench password"}
        r = Client(server).call("POST", "/_matrix/client/v3/login", body)
        device = Client(server, r["access_token"], user.user_id)
        device.device_id = r["device_id"]
        return device

    def upload_keys(device: Client, one_time: int) -> None:
        key = signedjson.key.generate_signing_key(device.device_id)
        public = signedjson.key.encode_verify_key_base64(key.verify_key)
        keys = signedjson.sign.sign_json({
            "user_id": device.user_id, "device_id": device.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"ed25519:{device.device_id}": public, f"curve25519:{device.device_id}": public},
        }, device.user_id, key)
        otks = {f"signed_curve25519:{device.device_id}{i}": signedjson.sign.sign_json(
            {"key": f"{device.device_id}-{i}"}, device.user_id, key) for i in range(one_time)}
        device.call("POST", "/_matrix/client/v3/keys/upload", {"device_keys": keys, "one_time_keys": otks})

    users, per_user = 10, args.fanout_devices // 10
    with running_server("e2ee") as server, ThreadPoolExecutor(4) as pool:
        asker = Client.register(server, "asker")
        owners = list(pool.map(lambda i: Client.register(server, f"owner{i}"), range(users)))
        log(f"  logging in {users * 10} devices with keys")
        keyed = list(pool.map(lambda u: login(server, u), [u for u in owners for _ in range(10)]))
        claims = args.claims
        list(pool.map(lambda d: upload_keys(d, claims), keyed))

        query = {"device_keys": {u.user_id: [] for u in owners}}
        queried = measure(server, args.queries, lambda: [
            asker.call("POST", "/_matrix/client/v3/keys/query", query) for _ in range(args.queries)])
        claim = {"one_time_keys": {u.user_id: {} for u in owners}}
        for d in keyed:
            claim["one_time_keys"][d.user_id][d.device_id] = "signed_curve25519"
        claimed = measure(server, claims, lambda: [
            asker.call("POST", "/_matrix/client/v3/keys/claim", claim) for _ in range(claims)])

        log(f"  logging in {users * (per_user - 10)} more devices")
        list(pool.map(lambda u: login(server, u), [u for u in owners for _ in range(per_user - 10)]))
        messages = {"messages": {u.user_id: {"*": {"body": "x" * 200}} for u in owners}}
        fanned = measure(server, args.fanouts, lambda: [
            asker.call("PUT", f"/_matrix/client/v3/sendToDevice/m.bench/{uuid.uuid4().hex}", messages)
            for _ in range(args.fanouts)])
        return {
            "query_devices": len(keyed),
            "cpu_ms_per_query": queried["cpu_ms_per_event"],
            "cpu_ms_per_claim": claimed["cpu_ms_per_event"],
            "fanout_devices": users * per_user,
            "cpu_ms_per_fanout": fanned["cpu_ms_per_event"],
            "rss_mib": fanned["rss_mib"],
        }


def bench_media(args) -> dict:
    """A 50 MB upload and its download (one client, one connection), and
    the first thumbnail (800x600, scale) of a 12-megapixel JPEG, timed at
    the client; the server's peak RSS (VmHWM) after all of it."""
    import io

    from PIL import Image  # brought by Synapse, the suite's federation peer

    size = args.media_mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="conduit-bench-media-") as data_dir:
        env = {"CONDUIT_MAX_REQUEST_SIZE": str(size + 1024)}
        server = Server(Path(data_dir), env, "bench-media")
        server.log_path.unlink(missing_ok=True)
        server.start()
        try:
            user = Client.register(server, "media")
            data = os.urandom(size)
            headers = {"Content-Type": "application/octet-stream", "Authorization": f"Bearer {user.token}"}
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
            start = time.perf_counter()
            conn.request("POST", "/_matrix/media/v3/upload", data, headers)
            answer = conn.getresponse()
            uri = json.loads(answer.read())["content_uri"]
            upload_s = time.perf_counter() - start
            start = time.perf_counter()
            conn.request("GET", f"/_matrix/client/v1/media/download/{uri[6:]}", headers=headers)
            answer = conn.getresponse()
            received = 0
            while chunk := answer.read(1 << 20):
                received += len(chunk)
            download_s = time.perf_counter() - start
            if received != size:
                raise RuntimeError(f"downloaded {received} of {size} bytes")

            width, height = 4000, 3000
            picture = Image.linear_gradient("L").resize((width, height)).convert("RGB")
            jpeg = io.BytesIO()
            picture.save(jpeg, "JPEG", quality=90)
            conn.request("POST", "/_matrix/media/v3/upload", jpeg.getvalue(),
                         {**headers, "Content-Type": "image/jpeg"})
            photo = json.loads(conn.getresponse().read())["content_uri"]
            start = time.perf_counter()
            conn.request("GET", f"/_matrix/client/v1/media/thumbnail/{photo[6:]}?width=800&height=600&method=scale",
                         headers=headers)
            answer = conn.getresponse()
            answer.read()
            thumbnail_ms = (time.perf_counter() - start) * 1000
            if answer.status != 200:
                raise RuntimeError(f"thumbnail: {answer.status}")
            with open(f"/proc/{server.proc.pid}/status") as f:
                peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
            return {
                "media_mb": args.media_mb,
                "upload_mb_per_s": args.media_mb / upload_s,
                "download_mb_per_s": args.media_mb / download_s,
                "thumbnail_12mp_ms": thumbnail_ms,
                "peak_rss_mib": peak,
            }
        finally:
            server.stop()


SECTIONS = {
    "idle": ("idle", bench_idle),
    "sequential": ("1 sender", bench_sequential),
    "concurrent": (f"{SENDERS} senders", bench_concurrent),
    "rooms": ("many rooms", bench_rooms),
    "play": ("Romeo & Juliet", bench_play),
    "federation": ("federation in", bench_federation),
    "e2ee": ("E2EE keys", bench_e2ee),
    "media": ("media", bench_media),
    "bigrooms": ("big rooms", bench_big_rooms),
    "pushes": ("pushes", bench_pushes),
    "appservice": ("appservice", bench_appservice),
}

LABELS = {
    "idle_rss_mib": ("RSS, one user, after 2 s idle", "MiB"),
    "rss_mib": ("RSS after", "MiB"),
    "members": ("room members, each with a pusher", ""),
    "pushes": ("pushes the gateway took", ""),
    "transactions": ("transactions", ""),
    "events": ("events", ""),
    "seconds": ("time", "s"),
    "events_per_s": ("events/s", ""),
    "cpu_ms_per_event": ("server CPU per event", "ms"),
    "rooms": ("rooms joined", ""),
    "create_rooms_s": ("creating them, 4 threads (setup)", "s"),
    "initial_sync_ms": ("initial sync", "ms"),
    "sync_samples": ("incremental syncs", ""),
    "sync_p50_ms": ("incremental sync p50", "ms"),
    "sync_p99_ms": ("incremental sync p99", "ms"),
    "wake_samples": ("long-poll wakes", ""),
    "wake_missed": ("long-polls that missed the send", ""),
    "wake_p50_ms": ("send -> long-poll wake p50", "ms"),
    "wake_p99_ms": ("send -> long-poll wake p99", "ms"),
    "sliding_first_ms": ("sliding sync, room list of 20: first answer", "ms"),
    "sliding_samples": ("sliding sync incremental answers", ""),
    "sliding_p50_ms": ("sliding sync incremental p50", "ms"),
    "sliding_p99_ms": ("sliding sync incremental p99", "ms"),
    "speakers": ("speakers (users)", ""),
    "directions_skipped": ("stage-direction lines in the play, not sent", ""),
    "setup_s": ("register + display name + join", "s"),
    "send_s": ("sends", "s"),
    "total_s": ("total time", "s"),
    "total_cpu_s": ("server CPU, whole workload", "s"),
    "pdus": ("PDUs over /send, 50 per transaction", ""),
    "pdus_per_s": ("PDUs/s", ""),
    "cpu_ms_per_pdu": ("server CPU per PDU", "ms"),
    "query_devices": ("devices queried and claimed", ""),
    "cpu_ms_per_query": ("server CPU per /keys/query (all of them)", "ms"),
    "cpu_ms_per_claim": ("server CPU per /keys/claim (one key each)", "ms"),
    "fanout_devices": ("devices one /sendToDevice reaches", ""),
    "cpu_ms_per_fanout": ("server CPU per /sendToDevice", "ms"),
    "media_mb": ("file uploaded and downloaded", "MB"),
    "upload_mb_per_s": ("upload", "MB/s"),
    "download_mb_per_s": ("download", "MB/s"),
    "thumbnail_12mp_ms": ("first 800x600 thumbnail of a 12 MP JPEG", "ms"),
    "peak_rss_mib": ("server peak RSS (VmHWM)", "MiB"),
    "join_s": ("join", "s"),
    "join_cpu_s": ("server CPU for the join", "s"),
    "join_peak_rss_mib": ("peak RSS (VmHWM) by the join's end", "MiB"),
    "rss_after_join_mib": ("RSS after the join", "MiB"),
    "send_cpu_ms": ("server CPU per local send, to 300 servers", "ms"),
    "send_cpu_ms_2_members": ("same in a room of 2 (1 other server)", "ms"),
    "pdu_in_cpu_ms": ("server CPU per incoming PDU", "ms"),
    "fork_merge_cpu_ms": ("server CPU for a fork of two topics and its merge", "ms"),
    "members_listed": ("members listed", ""),
    "members_ms": ("/members", "ms"),
    "lazy_initial_sync_ms": ("initial sync, lazy-loaded members", "ms"),
    "rss_end_mib": ("RSS at the end", "MiB"),
    "room_generation_s": ("making the room (test side)", "s"),
}


def machine() -> dict:
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    return {"cpus": os.cpu_count(), "cpu_model": model, "binary": os.environ["CONDUIT_BIN"]}


def print_table(results: dict) -> None:
    info = results["machine"]
    quick = " (--quick)" if results["quick"] else ""
    print(f"\nconduit benchmark{quick}: {info['binary']}\n{info['cpus']} x {info['cpu_model']}\n")
    print(f"{'section':<16} {'figure':<40} {'value':>10}")
    for key, (title, _) in SECTIONS.items():
        figures = results.get(key)
        if not figures or "error" in figures:
            print(f"{title:<16} {'(failed)' if figures else '(skipped)'}")
            continue
        for i, (name, value) in enumerate(figures.items()):
            base, _, members = name.partition("@")
            label, unit = LABELS[base]
            label = f"{label}, {int(members) // 1000}k" if members else label
            shown = f"{value:.{3 if value < 10 else 1}f}" if isinstance(value, float) else str(value)
            print(f"{title if i == 0 else '':<16} {label:<40} {shown:>10} {unit}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--play", type=Path, default=DEFAULT_PLAY, help="the Romeo & Juliet text")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only these sections")
    args = parser.parse_args()
    args.sends, args.rooms, args.sync_samples, args.wake_samples, args.play_lines, args.pdus = (
        (320, 100, 50, 20, 300, 200) if args.quick else (1000, 1000, 200, 100, None, 2000)
    )
    args.media_mb = 5 if args.quick else 50
    args.push_sends, args.as_events = (20, 500) if args.quick else (200, 5000)
    args.big_rooms, args.big_sends = ((1000,), 50) if args.quick else ((1000, 10_000, 30_000), 200)
    args.queries, args.claims, args.fanouts, args.fanout_devices = (
        (20, 5, 5, 200) if args.quick else (300, 50, 50, 1000)
    )
    target = os.environ.get("CARGO_TARGET_DIR") or Path.home() / ".cache" / "conduit" / "target"
    os.environ.setdefault("CONDUIT_BIN", str(Path(target) / "release" / "conduit"))
    if not Path(os.environ["CONDUIT_BIN"]).is_file():
        sys.exit(f"no binary at {os.environ['CONDUIT_BIN']}: build it or set CONDUIT_BIN")

    results = {"machine": machine(), "quick": args.quick}
    for key, (title, run) in SECTIONS.items():
        if args.only and key not in args.only:
            continue
        log(f"== {title}")
        try:
            results[key] = run(args)
        except Exception as e:  # report it and go on with the other sections
            log(f"  failed: {e}")
            results[key] = {"error": str(e)}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
    sys.exit(any("error" in results[key] for key in SECTIONS if results.get(key)))


if __name__ == "__main__":
    main()
