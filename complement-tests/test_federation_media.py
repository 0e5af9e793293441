"""Media across federation with a real Synapse: a Synapse user downloads
our user's picture through Synapse, and our user downloads a Synapse-hosted
picture (and a thumbnail of it) through us, both over the federation media
endpoints of Matrix 1.11."""

import requests

from conftest import unique
from federation import ours, register, synapse_peer  # noqa: F401 (ours is a fixture)
from test_media import jpeg_size, png, png_size

CLIENT_MEDIA = "/_matrix/client/v1/media"


synapse = synapse_peer("media")


def upload(client, data: bytes, content_type: str = "image/png", name: str = "picture.png") -> str:
    r = requests.post(client.base_url + "/_matrix/media/v3/upload", params={"filename": name}, data=data,
                      headers={"Content-Type": content_type, "Authorization": f"Bearer {client.token}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["content_uri"]


def test_media_both_ways_through_the_federation_endpoints(ours, synapse):
    alice = register(ours.url, unique("alice"))
    bob = synapse.register(unique("bob"))

    ours_picture = png(120, 80, (10, 200, 10))
    uri = upload(alice, ours_picture)
    r = bob.call("GET", f"{CLIENT_MEDIA}/download/{uri[6:]}")
    assert r.content == ours_picture and r.headers["Content-Type"] == "image/png"
    assert "GET /_matrix/federation/v1/media/download/" in ours.log()
    # Synapse asks us for thumbnails too, over the federation endpoint.
    r = bob.call("GET", f"{CLIENT_MEDIA}/thumbnail/{uri[6:]}", params={"width": 32, "height": 32, "method": "crop"})
    assert r.status_code == 200 and r.content
    # Another server's copy is not served on as ours.
    other = synapse.register(unique("carol"))
    assert other.call("GET", f"{CLIENT_MEDIA}/download/{uri[6:]}").content == ours_picture

    theirs = png(1000, 500, (10, 10, 200))
    synapse_uri = upload(bob, theirs, name="blue.png")
    assert synapse_uri.startswith(f"mxc://{synapse.server_name}/")
    r = alice.call("GET", f"{CLIENT_MEDIA}/download/{synapse_uri[6:]}")
    assert r.content == theirs and r.headers["Content-Type"] == "image/png"
    assert r.headers["Content-Disposition"] == 'inline; filename="blue.png"'
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    r = alice.call("GET", f"{CLIENT_MEDIA}/thumbnail/{synapse_uri[6:]}",
                   params={"width": 320, "height": 240, "method": "scale"})
    assert jpeg_size(r.content) == (320, 160)
    # A thumbnail of media not kept here is asked of its server, not made
    # from the whole original.
    other_uri = upload(bob, png(900, 900, (200, 0, 200)), name="square.png")
    r = alice.call("GET", f"{CLIENT_MEDIA}/thumbnail/{other_uri[6:]}",
                   params={"width": 96, "height": 96, "method": "crop"})
    size = png_size(r.content) if r.headers["Content-Type"] == "image/png" else jpeg_size(r.content)
    assert size == (96, 96)
    with open(synapse.log_path) as log:
        assert "GET /_matrix/federation/v1/media/thumbnail/" in log.read()
    again = alice.call("GET", f"{CLIENT_MEDIA}/thumbnail/{other_uri[6:]}",
                       params={"width": 90, "height": 90, "method": "crop"})
    assert again.content == r.content, "kept: the same size is not asked again"
    # Kept here: a second ask is answered without Synapse.
    synapse.stop()
    try:
        again = alice.call("GET", f"{CLIENT_MEDIA}/download/{synapse_uri[6:]}")
        assert again.content == theirs
    finally:
        synapse.start()
    missing = alice.call("GET", f"{CLIENT_MEDIA}/download/{synapse.server_name}/nosuchmedia", expect=None)
    assert missing.status_code == 404 and missing.json()["errcode"] == "M_NOT_FOUND", missing.text
