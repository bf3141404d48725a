"""One redaction for every output: passwords in any URI's user info and secret-bearing query
parameters hidden, whatever the scheme's case, the user (empty) or the password ('/' in it)."""

from __future__ import annotations

import pytest

from ingestor.redact import redact

AWS = (
    "mongodb+srv://AKIAEXAMPLE:wJalrXUtnFEMI%2FK7MDENG@cluster0.example.net/?authSource=%24external"
    "&authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:FQoGZXIvYXdzEBYaDH"
)


@pytest.mark.parametrize(
    ("text", "secrets", "kept"),
    [
        ("mongodb://u:hunter2@db:27017/x", ["hunter2"], "mongodb://u:***@db:27017/x"),
        ("MONGODB://u:hunter2@db/x", ["hunter2"], "MONGODB://u:***@db/x"),
        ("Mongodb+SRV://u:hunter2@db/x", ["hunter2"], "Mongodb+SRV://u:***@db/x"),
        ("mongodb://:hunter2@db/x", ["hunter2"], "mongodb://:***@db/x"),  # empty user
        ("mongodb://u:hun/ter2@db/x", ["hun/ter2", "ter2"], "mongodb://u:***@db/x"),
        ("mongodb://u:p@ss:w@rd@db/x", ["ss:w", "rd@db"], "mongodb://u:***@db/x"),
        (
            "mongodb://db/x?tls=true&tlsCertificateKeyFilePassword=hunter2&w=1",
            ["hunter2"],
            "mongodb://db/x?tls=true&tlsCertificateKeyFilePassword=***&w=1",
        ),
        (
            "MONGODB://db/?SSLPEMKEYPASSWORD=hunter2",
            ["hunter2"],
            "MONGODB://db/?SSLPEMKEYPASSWORD=***",
        ),
        (AWS, ["wJalrXUtnFEMI", "FQoGZXIvYXdzEBYaDH"], "authMechanismProperties=***"),
        (
            "https://api.example.com/x?apiKey=abc123&signature=deadbeef&symbol=BTCUSDT",
            ["abc123", "deadbeef"],
            "apiKey=***&signature=***&symbol=BTCUSDT",
        ),
        ("wss://u:hunter2@stream.example.com:9443", ["hunter2"], "wss://u:***@stream"),
        (
            "uri 'mongodb://u:hunter2@db/x' and \"http://a:b@c\" then text",
            ["hunter2", ":b@"],
            "'mongodb://u:***@db/x' and \"http://a:***@c\" then text",
        ),
    ],
)
def test_secrets_are_hidden(text: str, secrets: list[str], kept: str) -> None:
    out = redact(text)
    for secret in secrets:
        assert secret not in out, out
    assert kept in out, out


@pytest.mark.parametrize(
    "text",
    [
        "mongodb://user@db:27017",  # a user name is not a secret
        "mongodb://db:27017/x?authSource=admin&tlsCertificateKeyFile=/etc/k.pem",
        "http://host:8080/path and a@b",
        "no uri at all: a@b, k=v",
        "",
    ],
)
def test_nothing_else_changes(text: str) -> None:
    assert redact(text) == text


def test_every_output_uses_this_one_function() -> None:
    from ingestor import config, logs

    assert logs.redact is redact
    assert config.redact_uri is redact


@pytest.mark.parametrize(
    "command", [["run"], ["schema", "verify"], ["gaps", "--since", "2025-08-01"]]
)
def test_cli_messages_hide_a_uri_typed_into_the_wrong_key(command: list[str]) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = dict(os.environ, INGESTOR_MONGODB__DATABASE="mongodb://admin:hunter2@db.example.net/x")
    out = subprocess.run(
        [sys.executable, "-m", "ingestor", *command],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert "mongodb.database" in out.stderr
    assert "hunter2" not in out.stdout + out.stderr and "db.example.net" not in out.stderr
