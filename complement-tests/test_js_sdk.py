"""Runs the matrix-js-sdk scenarios (Node 22 from the npm package `node`)."""

import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
NODE = HERE / "node_modules" / ".bin" / "node"


def run_scenario(script: str, url: str, *args: str) -> None:
    result = subprocess.run([str(NODE), str(HERE / "js" / script), url, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{script} {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


def test_js_sdk_account_lifecycle(server):
    run_scenario("accounts.mjs", server.url)


@pytest.mark.parametrize(
    "part", ["presets", "messages", "state", "moderation", "redactsForOlderClients", "alias", "relations", "ephemeral", "directory", "unread", "media"]
)
def test_js_sdk_two_people_in_a_room(server, part):
    """One part of js/rooms.mjs per test, so a missing feature fails only its part."""
    run_scenario("rooms.mjs", server.url, part)
