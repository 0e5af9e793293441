"""End-to-end encryption through two real client SDKs: matrix-nio (vodozemac)
in e2ee_nio.py and matrix-js-sdk's Rust crypto in js/e2ee.mjs. Each part is
its own test, on our server alone and across federation with a real Synapse.

The same scenarios run against Synapse alone with e2ee_against_synapse.py."""

import subprocess
from pathlib import Path

import pytest

import e2ee_nio
from conftest import unique
from federation import ours, synapse_peer  # noqa: F401 (ours is a fixture)

HERE = Path(__file__).resolve().parent
NODE = HERE / "node_modules" / ".bin" / "node"
NIO_SCENARIOS = list(e2ee_nio.SCENARIOS)


def run_nio(name: str, alice_url: str, bob_url: str, store: Path) -> None:
    alice = e2ee_nio.register_user(alice_url, unique("alice"))
    bob = e2ee_nio.register_user(bob_url, unique("bob"))
    e2ee_nio.run(e2ee_nio.SCENARIOS[name], alice, bob, store)


def run_js(part: str, url: str, *more: str) -> None:
    result = subprocess.run([str(NODE), str(HERE / "js" / "e2ee.mjs"), url, part, *more],
                            capture_output=True, text=True, timeout=200)
    assert result.returncode == 0, f"e2ee.mjs {part} failed:\n{result.stdout}\n{result.stderr}"


synapse = synapse_peer("e2ee")


@pytest.mark.parametrize("scenario", NIO_SCENARIOS)
def test_nio_e2ee(server, tmp_path, scenario):
    """Alice and Bob on our server: keys upload/query/claim, room keys by
    to-device, device list changes (see e2ee_nio.py for each scenario)."""
    run_nio(scenario, server.url, server.url, tmp_path)


@pytest.mark.parametrize("alice_on", ["ours", "synapse"])
@pytest.mark.parametrize("scenario", NIO_SCENARIOS)
def test_nio_e2ee_over_federation(ours, synapse, tmp_path, scenario, alice_on):
    """The same with one user on our server and the other on Synapse: keys
    query and claim over federation, to-device and device list updates as EDUs."""
    urls = {"ours": ours.url, "synapse": synapse.url}
    bob_on = "synapse" if alice_on == "ours" else "ours"
    run_nio(scenario, urls[alice_on], urls[bob_on], tmp_path)


def test_js_sdk_cross_signing_secret_storage_and_key_backup(server):
    """Cross-signing (password UIA), secret storage, key backup, and a new
    device that restores the backup and decrypts the old messages."""
    run_js("backup", server.url)


def test_js_sdk_dehydrated_device(server):
    """MSC3814: a message to a user with no device online reaches her next
    device through her dehydrated device."""
    run_js("dehydration", server.url)


def test_js_sdk_dehydrated_device_gets_a_room_key_over_federation(ours, synapse):
    """The same with the sender on Synapse: the room key reaches our
    dehydrated device as a to-device EDU."""
    run_js("dehydration", ours.url, synapse.url)
