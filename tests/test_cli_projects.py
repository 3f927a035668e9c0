"""`infraprism projects`: the reporting zone, set and shown as a user runs them."""

from __future__ import annotations

import orjson

from infraprism.core.zones import tzdata_version
from tests.test_cli import cli


def test_set_timezone_then_show(settings_env: dict[str, str]) -> None:
    shown = cli("projects", "show", "acme", "--json", env=settings_env)
    assert shown.returncode == 0, shown.stderr
    assert orjson.loads(shown.stdout)["timezone"] == "UTC"

    done = cli("projects", "set-timezone", "acme", "Australia/Lord_Howe", env=settings_env)
    assert done.returncode == 0, done.stderr
    assert b"Australia/Lord_Howe" in done.stdout

    fields = orjson.loads(cli("projects", "show", "acme", "--json", env=settings_env).stdout)
    assert fields["timezone"] == "Australia/Lord_Howe"
    assert fields["timezone_set_at"].endswith("Z")
    assert tzdata_version() in fields["tz_database"]
    table = cli("projects", "show", "acme", env=settings_env).stdout.decode()
    assert "Australia/Lord_Howe" in table


def test_an_unknown_zone_is_one_clear_line(settings_env: dict[str, str]) -> None:
    done = cli("projects", "set-timezone", "acme", "Europe/Atlantis", env=settings_env)
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines() == [
        "infraprism: unknown time zone 'Europe/Atlantis': use an IANA name such as Europe/Berlin or UTC"
    ]
    shown = orjson.loads(cli("projects", "show", "acme", "--json", env=settings_env).stdout)
    assert shown["timezone"] == "UTC"
