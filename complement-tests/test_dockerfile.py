"""The Dockerfile cannot be built here (no Docker engine): these tests keep
it in step with what can run, namely scripts/, the config loader, the docs
and the binary run the way the image runs it."""

import re
import subprocess
import time
from pathlib import Path

import requests

from conftest import binary, clean_env, free_port

ROOT = Path(__file__).resolve().parent.parent
# Continued lines joined: each instruction on one line.
DOCKERFILE = re.sub(r"[ \t]*\\\n[ \t]*", " ", (ROOT / "Dockerfile").read_text())
INSTALL_DOC = (ROOT / "docs" / "install.md").read_text()
EXAMPLE = (ROOT / "conduit.toml.example").read_text()


def runtime_stage() -> str:
    return DOCKERFILE[DOCKERFILE.rindex("\nFROM "):]


def image_env() -> dict[str, str]:
    block = re.search(r"\nENV (.*)", runtime_stage()).group(1)
    return dict(re.findall(r"(CONDUIT_\w+)=(\S+)", block))


def test_image_variables_are_config_keys_documented_in_install_md():
    env = image_env()
    assert env, "the runtime stage sets CONDUIT_* variables"
    for name, value in env.items():
        key = name.removeprefix("CONDUIT_").lower()
        assert re.search(rf"^#?{key} = ", EXAMPLE, re.M), f"{name} is no key of conduit.toml.example"
        assert f"`{name}={value}`" in INSTALL_DOC, f"docs/install.md does not give {name}={value}"


def test_ports_user_volume_binary_agree():
    stage = runtime_stage()
    env = image_env()
    exposed = re.search(r"\nEXPOSE (.*)", stage).group(1).split()
    assert exposed == [env["CONDUIT_PORT"], env["CONDUIT_FEDERATION_PORT"]]
    # The image's ports are the server's defaults.
    assert f"\nport = {env['CONDUIT_PORT']}\n" in EXAMPLE
    assert re.search(rf"^#?federation_port = {env['CONDUIT_FEDERATION_PORT']}$", EXAMPLE, re.M)
    for port in exposed:
        assert f"-p {port}:{port}" in INSTALL_DOC
    user = re.search(r"\nUSER (\S+)", stage).group(1)
    uid = re.search(rf"useradd [^&]*--uid (\d+)[^&]* {user}\b", stage).group(1)
    assert f"`{user}` (uid {uid})" in INSTALL_DOC
    assert re.search(r"\nVOLUME /data\n", stage) and "`/data`" in INSTALL_DOC
    assert env["CONDUIT_DATABASE_PATH"].startswith("/data/")
    assert "COPY --from=builder /usr/local/bin/conduit /usr/local/bin/conduit" in stage
    assert 'ENTRYPOINT ["conduit"]' in stage and 'CMD ["serve"]' in stage
    assert 'CMD ["conduit", "health"]' in stage


def test_builder_does_what_the_scripts_do():
    builder = DOCKERFILE[:DOCKERFILE.rindex("\nFROM ")]
    serve = (ROOT / "scripts" / "serve").read_text()
    deps = (ROOT / "scripts" / "install-system-deps").read_text()
    assert "cargo run --release --locked" in serve
    assert "cargo build --release --locked" in builder
    packages = re.search(r"apt-get install -y --no-install-recommends ([^&]*)", builder).group(1).split()
    # Every build package the script installs, and no other.
    for package in packages:
        assert f"missing+=({package})" in deps, package
    assert set(packages) == {"libclang-dev", "g++"}


def test_the_binary_runs_as_the_image_runs_it(tmp_path):
    """The image's variables plus a server name: a real (closed) server,
    and `conduit health` (the HEALTHCHECK) passes."""
    port = free_port()
    env = {
        **clean_env(),
        **image_env(),
        "CONDUIT_DATABASE_PATH": str(tmp_path / "db"),
        "CONDUIT_ADDRESS": "127.0.0.1",
        "CONDUIT_PORT": str(port),
        "CONDUIT_SERVER_NAME": "example.test",
    }
    unhealthy = subprocess.run([str(binary()), "health"], env=env, capture_output=True, text=True, timeout=30)
    assert unhealthy.returncode != 0 and "no answer" in unhealthy.stderr
    proc = subprocess.Popen([str(binary())], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(300):
            result = subprocess.run([str(binary()), "health"], env=env, capture_output=True, text=True, timeout=30)
            if result.returncode == 0:
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "healthy"
        # Not a development server: registration needs a token.
        r = requests.post(f"http://127.0.0.1:{port}/_matrix/client/v3/register",
                          json={"username": "someone", "password": "correct horse battery",
                                "auth": {"type": "m.login.dummy"}}, timeout=30)
        assert r.status_code == 401, r.text
        stages = [flow["stages"] for flow in r.json()["flows"]]
        assert all("m.login.registration_token" in s for s in stages), stages
    finally:
        proc.kill()
        proc.communicate()
