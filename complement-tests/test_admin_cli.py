"""`conduit admin`: every subcommand against a running server (through its
admin socket, mode 0600) and against a stopped one (on the database)."""

import os
import stat
import subprocess

from conftest import binary, clean_env, unique
from test_registration_tokens import refused, register_with_token, valid


def admin(server, *words, ok=True):
    result = subprocess.run([str(binary()), "admin", *words], env=server.env, capture_output=True, text=True, timeout=60, cwd=server.data_dir)
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def created_token(result) -> str:
    """The token is the first word of a token line."""
    return result.stdout.split()[0]


def test_admin_commands_on_a_running_server(make_server):
    server = make_server({"CONDUIT_REGISTRATION_REQUIRES_TOKEN": "true"})
    sock = server.data_dir / "db" / "admin" / "admin.sock"
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700

    token = created_token(admin(server, "token", "create", "--uses", "2", "--expires", "7d", "--note", "for the book club"))
    assert valid(server, token), "made by the running server, valid at once"
    shown = admin(server, "token", "show", token).stdout
    assert "0/2 used" in shown and "for the book club" in shown and "expires in 6d 23h" in shown and "by cli" in shown
    assert token in admin(server, "token", "list").stdout

    assert "0/3 used" in admin(server, "token", "update", token, "--uses", "3", "--never").stdout
    assert "never expires" in admin(server, "token", "show", token).stdout
    assert register_with_token(server, token).status_code == 200
    assert "1/3 used" in admin(server, "token", "show", token).stdout

    assert "revoked" in admin(server, "token", "revoke", token).stdout
    assert not valid(server, token)
    assert refused(register_with_token(server, token))
    assert token not in admin(server, "token", "list").stdout, "only valid ones by default"
    assert token in admin(server, "token", "list", "--all").stdout

    custom = created_token(admin(server, "token", "create", "--token", "my-token_1"))
    assert custom == "my-token_1" and valid(server, custom)
    assert len(created_token(admin(server, "token", "create", "--length", "24"))) == 24

    invite = admin(server, "invite").stdout
    invite_token = invite.split("Invite token for localhost: ")[1].split()[0]
    assert "0/1 used" in invite and ("expires in 6d 23h" in invite or "expires in 7d 0h" in invite)
    assert register_with_token(server, invite_token).status_code == 200
    assert not valid(server, invite_token)

    # Errors: exit 1 with the reason; help exits 0.
    result = admin(server, "token", "show", "nope", ok=False)
    assert result.returncode == 1 and "No such registration token" in result.stderr
    result = admin(server, "token", "create", "--token", "bad token", ok=False)
    assert result.returncode == 1 and "token must consist" in result.stderr
    result = admin(server, "frobnicate", ok=False)
    assert result.returncode != 0 and "frobnicate" in result.stderr
    result = admin(server, "token", "create", "--expires", "soon", ok=False)
    assert result.returncode != 0 and "duration" in result.stderr
    assert "create" in admin(server, "token", "--help").stdout


def test_admin_commands_on_a_stopped_server(make_server):
    server = make_server({"CONDUIT_REGISTRATION_REQUIRES_TOKEN": "true"})
    early = created_token(admin(server, "token", "create", "--uses", "1"))
    server.stop()
    # (The socket file may remain; nothing listens on it now.)

    # The database is opened directly: the same commands work.
    listed = admin(server, "token", "list")
    assert early in listed.stdout and "the server is not running" in listed.stderr
    offline = created_token(admin(server, "token", "create", "--uses", "5", "--note", "made offline"))
    assert "0/5 used" in admin(server, "token", "show", offline).stdout
    admin(server, "token", "update", offline, "--uses", "6")
    admin(server, "token", "revoke", early)
    invite = admin(server, "invite", "--uses", "2", "--expires", "1h").stdout
    invite_token = invite.split("Invite token for localhost: ")[1].split()[0]

    server.start()
    assert valid(server, offline) and valid(server, invite_token)
    assert not valid(server, early)
    assert "0/6 used" in admin(server, "token", "show", offline).stdout
    assert register_with_token(server, offline, username=unique("off")).status_code == 200


def test_admin_commands_refuse_a_missing_database(tmp_path):
    """A wrong path must not quietly create a new server's database."""
    env = clean_env()
    env["CONDUIT_DATABASE_PATH"] = str(tmp_path / "nothing-here")
    result = subprocess.run([str(binary()), "admin", "token", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "there is no database there" in result.stderr
    assert not (tmp_path / "nothing-here").exists()


def test_make_and_revoke_admin(make_server):
    """A server with open registration has no admin until one is made."""
    server = make_server()
    alice = server.register(unique("alice"))
    tokens = "/_synapse/admin/v1/registration_tokens"
    assert server.request("GET", tokens, token=alice["access_token"]).status_code == 403
    assert "is now a server admin" in admin(server, "user", "make-admin", alice["user_id"]).stdout
    assert server.request("GET", tokens, token=alice["access_token"]).status_code == 200
    admin(server, "user", "revoke-admin", alice["user_id"].split(":")[0][1:])
    assert server.request("GET", tokens, token=alice["access_token"]).status_code == 403
    result = admin(server, "user", "make-admin", "@nobody:localhost", ok=False)
    assert result.returncode == 1 and "No such user" in result.stderr
