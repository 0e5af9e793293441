"""Runs the matrix-js-sdk scenarios (Node 22 from the npm package `node`)."""

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
NODE = HERE / "node_modules" / ".bin" / "node"


def run_scenario(script: str, url: str) -> None:
    result = subprocess.run([str(NODE), str(HERE / "js" / script), url], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"


def test_js_sdk_account_lifecycle(server):
    run_scenario("accounts.mjs", server.url)
