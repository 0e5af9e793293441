"""The media repository with raw HTTP: uploads (plain and asynchronous),
authenticated downloads with their safety headers and ranges, thumbnails
of the sizes asked, the frozen unauthenticated routes, and hostile input:
an upload over the limit, a decompression bomb, scriptable types, a crash
in the middle of an upload."""

import io
import os
import signal
import struct
import time
import zlib
from pathlib import Path

import requests

from conftest import unique

MEDIA = "/_matrix/media/v3"
CLIENT_MEDIA = "/_matrix/client/v1/media"


def png(width: int, height: int, color=(200, 30, 30)) -> bytes:
    """A real PNG, filled with one colour (made here: no imaging library)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(color) * width
    raw = zlib.compress(row * height, 9)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def jpeg_size(data: bytes) -> tuple[int, int]:
    """Width and height from a JPEG's start-of-frame marker."""
    stream = io.BytesIO(data)
    assert stream.read(2) == b"\xff\xd8"
    while True:
        marker, length = struct.unpack(">HH", stream.read(4))
        if 0xFFC0 <= marker <= 0xFFCF and marker not in (0xFFC4, 0xFFC8, 0xFFCC):
            _, height, width = struct.unpack(">BHH", stream.read(5))
            return width, height
        stream.seek(length - 2, 1)


def upload(server, token: str, data: bytes, content_type: str = "image/png", name: str | None = None):
    params = {"filename": name} if name else {}
    return server.request("POST", f"{MEDIA}/upload", token=token, data=data,
                          headers={"Content-Type": content_type}, params=params)


def user(server) -> str:
    return server.register(unique())["access_token"]


def media_files(server) -> list[Path]:
    root = server.data_dir / "db" / "media" / "sha256"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_upload_download_headers_and_ranges(server):
    alice, bob = user(server), user(server)
    picture = png(64, 48)
    r = upload(server, alice, picture, name="red dot.png")
    assert r.status_code == 200, r.text
    uri = r.json()["content_uri"]
    assert uri.startswith(f"mxc://{server.server_name}/")
    media_id = uri.rsplit("/", 1)[1]
    path = f"{CLIENT_MEDIA}/download/{server.server_name}/{media_id}"

    # Authenticated media needs a token.
    r = server.request("GET", path)
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = server.request("GET", path, token=bob)
    assert r.status_code == 200 and r.content == picture
    assert r.headers["Content-Type"] == "image/png"
    assert r.headers["Content-Disposition"] == 'inline; filename="red dot.png"'
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Content-Security-Policy"].startswith("sandbox;")
    assert r.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    # A name in the path wins; a name that is not plain ASCII is encoded.
    r = server.request("GET", f"{path}/été.png", token=bob)
    assert r.headers["Content-Disposition"] == "inline; filename*=utf-8''%C3%A9t%C3%A9.png"

    # Ranges, for audio and video players.
    r = server.request("GET", path, token=bob, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == picture[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(picture)}"
    r = server.request("GET", path, token=bob, headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == picture[-5:]
    r = server.request("GET", path, token=bob, headers={"Range": f"bytes={len(picture)}-"})
    assert r.status_code == 416

    # The same bytes uploaded again are one file.
    assert upload(server, bob, picture).status_code == 200
    assert len(media_files(server)) == 1
    r = server.request("GET", f"{CLIENT_MEDIA}/download/{server.server_name}/nosuchmedia", token=bob)
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    config = server.request("GET", f"{CLIENT_MEDIA}/config", token=bob).json()
    assert config["m.upload.size"] > 0


def test_scriptable_types_are_attachments(server):
    alice = user(server)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    for data, kind in ((svg, "image/svg+xml"), (b"<html><script>alert(1)</script></html>", "text/html")):
        uri = upload(server, alice, data, kind, name="x").json()["content_uri"]
        r = server.request("GET", f"{CLIENT_MEDIA}/download/{uri[6:]}", token=alice)
        assert r.status_code == 200 and r.content == data
        assert r.headers["Content-Disposition"].startswith("attachment"), r.headers
        assert "sandbox" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_thumbnails_of_the_sizes_asked(server):
    alice = user(server)
    uri = upload(server, alice, png(1000, 500)).json()["content_uri"]
    base = f"{CLIENT_MEDIA}/thumbnail/{uri[6:]}"
    r = server.request("GET", base, token=alice, params={"width": 96, "height": 96, "method": "crop"})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "image/jpeg" and jpeg_size(r.content) == (96, 96)
    r = server.request("GET", base, token=alice, params={"width": 320, "height": 240, "method": "scale"})
    assert r.status_code == 200 and jpeg_size(r.content) == (320, 160)
    # Made once: the second ask is the same file.
    again = server.request("GET", base, token=alice, params={"width": 300, "height": 200, "method": "scale"})
    assert again.content == r.content
    r = server.request("GET", base, token=alice, params={"width": 96})
    assert r.status_code == 400 and r.json()["errcode"] == "M_MISSING_PARAM"
    r = server.request("GET", base, token=alice, params={"width": 96, "height": 96, "method": "stretch"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"
    # Not a picture: no thumbnail.
    text = upload(server, alice, b"hello", "text/plain").json()["content_uri"]
    r = server.request("GET", f"{CLIENT_MEDIA}/thumbnail/{text[6:]}", token=alice, params={"width": 96, "height": 96})
    assert r.status_code == 400


def test_a_decompression_bomb_makes_no_thumbnail_and_no_memory_blowup(server):
    alice = user(server)
    bomb = png(20_000, 20_000, (0, 0, 0))  # 1.2 GB of pixels, about a megabyte compressed
    assert len(bomb) < 5_000_000
    uri = upload(server, alice, bomb).json()["content_uri"]
    r = server.request("GET", f"{CLIENT_MEDIA}/thumbnail/{uri[6:]}", token=alice, params={"width": 96, "height": 96})
    assert r.status_code == 400, r.text
    with open(f"/proc/{server.proc.pid}/status") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    assert rss_kib < 200 * 1024, f"RSS {rss_kib} KiB"
    # The original is still there, as uploaded.
    assert server.request("GET", f"{CLIENT_MEDIA}/download/{uri[6:]}", token=alice).content == bomb


def test_an_upload_over_the_limit_is_refused_and_leaves_nothing(make_server):
    server = make_server({"CONDUIT_MAX_REQUEST_SIZE": "100000"})
    alice = user(server)
    r = upload(server, alice, os.urandom(100_001), "application/octet-stream")
    assert r.status_code == 413 and r.json()["errcode"] == "M_TOO_LARGE"

    # Without a length up front (chunked), the limit still holds.
    def chunks():
        for _ in range(20):
            yield os.urandom(10_000)
    r = server.request("POST", f"{MEDIA}/upload", token=alice, data=chunks(),
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 413 and r.json()["errcode"] == "M_TOO_LARGE"
    assert media_files(server) == []
    assert list((server.data_dir / "db" / "media" / "tmp").iterdir()) == []
    assert upload(server, alice, os.urandom(100_000), "application/octet-stream").status_code == 200


def test_asynchronous_upload_create_then_put(server):
    alice, bob = user(server), user(server)
    r = server.request("POST", "/_matrix/media/v1/create", token=alice)
    assert r.status_code == 200, r.text
    uri, expires = r.json()["content_uri"], r.json()["unused_expires_at"]
    assert expires > time.time() * 1000
    server_name, media_id = uri[6:].split("/")
    # Not there yet.
    r = server.request("GET", f"{CLIENT_MEDIA}/download/{uri[6:]}", token=bob)
    assert r.status_code == 504 and r.json()["errcode"] == "M_NOT_YET_UPLOADED"
    put = f"{MEDIA}/upload/{server_name}/{media_id}"
    # Only its creator fills it.
    r = server.request("PUT", put, token=bob, data=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = server.request("PUT", put, token=alice, data=b"later", headers={"Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    r = server.request("PUT", put, token=alice, data=b"again", headers={"Content-Type": "text/plain"})
    assert r.status_code == 409 and r.json()["errcode"] == "M_CANNOT_OVERWRITE_MEDIA"
    r = server.request("GET", f"{CLIENT_MEDIA}/download/{uri[6:]}", token=bob)
    assert r.status_code == 200 and r.content == b"later"
    # At most ten waiting per user.
    for _ in range(10):
        assert server.request("POST", "/_matrix/media/v1/create", token=bob).status_code == 200
    r = server.request("POST", "/_matrix/media/v1/create", token=bob)
    assert r.status_code == 429 and r.json()["errcode"] == "M_LIMIT_EXCEEDED"


def test_unauthenticated_routes_serve_only_media_from_before_the_cutoff(make_server, tmp_path):
    data = tmp_path / "frozen"
    data.mkdir()
    server = make_server(data_dir=data)
    alice = user(server)
    old = upload(server, alice, png(8, 8)).json()["content_uri"]
    # Media uploaded after the cutoff (here: every upload) is refused there.
    for route in (f"{MEDIA}/download/{old[6:]}", f"{MEDIA}/thumbnail/{old[6:]}?width=32&height=32"):
        r = server.request("GET", route)
        assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND", route
    server.stop()
    # An admin who froze at a later time still serves what came before.
    later = make_server({"CONDUIT_UNAUTHENTICATED_MEDIA_BEFORE": str(int(time.time() * 1000) + 1000)}, data_dir=data)
    r = later.request("GET", f"{MEDIA}/download/{old[6:]}")
    assert r.status_code == 200 and png_size(r.content) == (8, 8)
    r = later.request("GET", f"{MEDIA}/thumbnail/{old[6:]}", params={"width": 32, "height": 32, "method": "crop"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"


def test_kill_9_during_an_upload_leaves_no_media_and_no_orphan(make_server, tmp_path):
    data = tmp_path / "crash"
    data.mkdir()
    server = make_server(data_dir=data)
    alice = user(server)
    kept = upload(server, alice, b"kept", "text/plain").json()["content_uri"]

    def slow():
        yield b"x" * 100_000
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGKILL)
        time.sleep(0.5)
        yield b"y" * 100_000
    try:
        server.request("POST", f"{MEDIA}/upload", token=alice, data=slow(),
                       headers={"Content-Type": "application/octet-stream"})
    except requests.RequestException:
        pass
    server.proc.wait()
    assert list((data / "db" / "media" / "tmp").iterdir()), "the cut-off upload was being written"
    again = make_server(data_dir=data)
    assert list((data / "db" / "media" / "tmp").iterdir()) == []
    assert len(media_files(again)) == 1
    r = again.request("GET", f"{CLIENT_MEDIA}/download/{kept[6:]}", token=alice)
    assert r.status_code == 200 and r.content == b"kept"


def test_admins_list_quarantine_and_delete_media(server):
    from test_admin_cli import admin

    alice = server.register(unique())
    admin(server, "user", "make-admin", alice["user_id"])
    bob = server.register(unique())
    picture = png(200, 200)
    uri = upload(server, bob["access_token"], picture, name="bob.png").json()["content_uri"]
    server_name, media_id = uri[6:].split("/")
    thumb = server.request("GET", f"{CLIENT_MEDIA}/thumbnail/{uri[6:]}", token=alice["access_token"],
                           params={"width": 32, "height": 32, "method": "crop"})
    assert thumb.status_code == 200
    assert len(media_files(server)) == 2

    # The CLI (and `!admin`) command set.
    listed = admin(server, "media", "list", bob["user_id"]).stdout
    assert uri in listed and '"bob.png"' in listed and "1 uploads in all." in listed
    assert "uploaded by " + bob["user_id"] in admin(server, "media", "show", uri).stdout
    # The Synapse admin API, as synapse-admin calls it; admins only.
    api = "/_synapse/admin/v1"
    r = server.request("GET", f"{api}/users/{bob['user_id']}/media", token=bob["access_token"])
    assert r.status_code == 403
    r = server.request("GET", f"{api}/users/{bob['user_id']}/media", token=alice["access_token"])
    assert r.status_code == 200 and r.json()["total"] == 1
    entry = r.json()["media"][0]
    assert (entry["media_id"], entry["media_type"], entry["media_length"], entry["upload_name"]) == (
        media_id, "image/png", len(picture), "bob.png")

    r = server.request("POST", f"{api}/media/quarantine/{server_name}/{media_id}", token=alice["access_token"])
    assert r.status_code == 200
    for path in (f"{CLIENT_MEDIA}/download/{uri[6:]}", f"{CLIENT_MEDIA}/thumbnail/{uri[6:]}?width=32&height=32"):
        assert server.request("GET", path, token=bob["access_token"]).status_code == 404
    info = server.request("GET", f"{api}/media/{server_name}/{media_id}", token=alice["access_token"]).json()
    assert info["media_info"]["quarantined_by"] == alice["user_id"]
    assert "is served again" in admin(server, "media", "unquarantine", uri).stdout
    assert server.request("GET", f"{CLIENT_MEDIA}/download/{uri[6:]}", token=bob["access_token"]).status_code == 200

    r = server.request("DELETE", f"{api}/media/{server_name}/{media_id}", token=alice["access_token"])
    assert r.status_code == 200 and r.json() == {"deleted_media": [media_id], "total": 1}
    assert server.request("GET", f"{CLIENT_MEDIA}/download/{uri[6:]}", token=bob["access_token"]).status_code == 404
    assert media_files(server) == [], "the file and its thumbnail are gone"
    assert "0 uploads in all." in admin(server, "media", "list", bob["user_id"]).stdout


class Pages:
    """A small web server on 127.0.0.2 (allowed by the test's config), with
    a page, its image, and redirects to addresses that must stay out of
    reach."""

    def __init__(self, picture: bytes):
        import http.server
        import threading

        from conftest import free_port

        pages = self
        self.port = free_port()
        self.hits: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                pages.hits.append(self.path)
                if self.path == "/page":
                    body = (b'<html><head><title>Fallback</title>'
                            b'<meta property="og:title" content="A page to share">'
                            b'<meta property="og:description" content="What it is about">'
                            b'<meta property="og:image" content="/picture.png"></head><body>hi</body></html>')
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                elif self.path == "/picture.png":
                    body = picture
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                elif self.path.startswith("/redirect?to="):
                    body = b""
                    self.send_response(302)
                    self.send_header("Location", requests.utils.unquote(self.path.split("=", 1)[1]))
                else:
                    body = b""
                    self.send_response(404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.2", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.2:{self.port}"


def test_url_previews_reach_only_allowed_addresses(make_server):
    off = make_server()
    token = user(off)
    r = off.request("GET", f"{CLIENT_MEDIA}/preview_url", token=token, params={"url": "http://example.org/"})
    assert r.status_code == 404 and r.json()["errcode"] == "M_UNRECOGNIZED", "off by default"

    pages = Pages(png(300, 200))
    server = make_server({"CONDUIT_URL_PREVIEW_ENABLED": "true",
                          "CONDUIT_URL_PREVIEW_IP_RANGE_ALLOWLIST": '["127.0.0.2/32"]'})
    token = user(server)
    try:
        r = server.request("GET", f"{CLIENT_MEDIA}/preview_url", token=token, params={"url": f"{pages.base}/page"})
        assert r.status_code == 200, r.text
        preview = r.json()
        assert preview["og:title"] == "A page to share" and preview["og:description"] == "What it is about"
        assert preview["og:image"].startswith("mxc://") and preview["og:image:type"] == "image/png"
        assert (preview["og:image:width"], preview["og:image:height"]) == (300, 200)
        image = server.request("GET", f"{CLIENT_MEDIA}/download/{preview['og:image'][6:]}", token=token)
        assert image.status_code == 200 and png_size(image.content) == (300, 200)
        # Kept: the page is not fetched again.
        fetched = len(pages.hits)
        assert server.request("GET", f"{CLIENT_MEDIA}/preview_url", token=token,
                              params={"url": f"{pages.base}/page"}).json() == preview
        assert len(pages.hits) == fetched

        port = server.port  # something does listen there: a refusal is the policy's
        for url in (f"http://127.0.0.1:{port}/", "http://10.0.0.1/", f"http://[::1]:{port}/",
                    f"http://localhost:{port}/", f"{pages.base}/redirect?to=http://127.0.0.1:{port}/_matrix/client/versions",
                    f"{pages.base}/redirect?to=http://localhost:{port}/", "file:///etc/passwd"):
            r = server.request("GET", f"{CLIENT_MEDIA}/preview_url", token=token, params={"url": url})
            assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN", (url, r.status_code, r.text)
        assert server.request("GET", f"{CLIENT_MEDIA}/preview_url", token=token).json()["errcode"] == "M_MISSING_PARAM"
    finally:
        pages.httpd.shutdown()


def test_animated_thumbnails_only_when_asked(server):
    from PIL import Image  # brought by Synapse

    alice = user(server)
    frames = [Image.new("RGB", (400, 300), (i * 60, 20, 200 - i * 60)) for i in range(4)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    uri = upload(server, alice, gif.getvalue(), "image/gif").json()["content_uri"]
    base = f"{CLIENT_MEDIA}/thumbnail/{uri[6:]}"
    moving = server.request("GET", base, token=alice, params={"width": 96, "height": 96, "method": "crop", "animated": "true"})
    assert moving.status_code == 200 and moving.headers["Content-Type"] == "image/gif", moving.text
    shown = Image.open(io.BytesIO(moving.content))
    assert shown.size == (96, 96) and shown.n_frames == 4
    still = server.request("GET", base, token=alice, params={"width": 96, "height": 96, "method": "crop"})
    assert still.headers["Content-Type"] in ("image/jpeg", "image/png")
    assert Image.open(io.BytesIO(still.content)).size == (96, 96)
