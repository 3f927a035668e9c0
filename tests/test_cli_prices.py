"""`infraprism prices`: overrides set, listed and deleted as a user runs them, against the real redis-server.

Every error is one line on stderr naming what to change, with exit code 1 and no traceback.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from tests.test_cli import cli

DECIMALS = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok", "discount_percent")
GPT = ["--project", "acme", "--model", "gpt-4o"]
RATES = ["--input-per-mtok", "2.5", "--output-per-mtok", "10"]
# Midnight of 2025-01-01 in Berlin (UTC+1 in winter), the zone the project reports in.
BERLIN_NEW_YEAR_MS = int(datetime(2024, 12, 31, 23, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def acme(settings_env: dict[str, str]) -> dict[str, str]:
    """The environment, with project acme existing (it has settings) and reporting in Berlin."""
    done = cli("projects", "set-timezone", "acme", "Europe/Berlin", env=settings_env)
    assert done.returncode == 0, done.stderr
    return settings_env


def listed(env: dict[str, str]) -> list[dict]:
    """`prices list --json`, its decimal texts read as Decimal (the text is exact, its notation is not ours)."""
    done = cli("prices", "list", "--project", "acme", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return [
        {name: Decimal(value) if name in DECIMALS and value is not None else value for name, value in o.items()}
        for o in orjson.loads(done.stdout)
    ]


def one_error_line(done) -> str:
    stderr = done.stderr.decode()
    assert done.returncode == 1, (done.stdout, stderr)
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_set_list_delete_round_trip(acme: dict[str, str]) -> None:
    done = cli("prices", "set", *GPT, *RATES, "--cache-read-per-mtok", "1.25", env=acme)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == (
        "project acme: gpt-4o from the beginning of time: input 2.5, output 10, cache read 1.25, "
        "cache write = input $/Mtok"
    )
    done = cli(
        "prices", "set", *GPT, "--input-per-mtok", "2", "--output-per-mtok", "8", "--from", "2025-01-01", env=acme
    )
    assert done.returncode == 0, done.stderr

    first, second = listed(acme)
    assert first | {"set_at": None} == {
        "model": "gpt-4o",
        "provider": None,
        "effective_from": None,
        "effective_from_ms": 0,
        "effective_until": "2025-01-01",  # the later override ends it
        "input_per_mtok": Decimal("2.5"),
        "output_per_mtok": Decimal(10),
        "cache_read_per_mtok": Decimal("1.25"),
        "cache_write_per_mtok": None,
        "discount_percent": None,
        "set_at": None,
    }
    assert second["effective_from"] == "2025-01-01"
    assert second["effective_from_ms"] == BERLIN_NEW_YEAR_MS
    assert second["effective_until"] is None
    assert (second["input_per_mtok"], second["output_per_mtok"]) == (2, 8)

    table = cli("prices", "list", "--project", "acme", env=acme).stdout.decode().splitlines()
    assert table[0].split() == [
        "MODEL",
        "PROVIDER",
        "FROM",
        "UNTIL",
        "INPUT/MTOK",
        "OUTPUT/MTOK",
        "CACHE_READ/MTOK",
        "CACHE_WRITE/MTOK",
        "DISCOUNT",
        "SET_AT",
    ]
    assert table[1].split()[:9] == ["gpt-4o", "(any)", "(start)", "2025-01-01", "2.5", "10", "1.25", "2.5", "-"]
    assert table[2].split()[:9] == ["gpt-4o", "(any)", "2025-01-01", "-", "2", "8", "2", "2", "-"]

    done = cli("prices", "delete", *GPT, "--from", "2025-01-01", env=acme)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[0] == "project acme: deleted 1 price override"
    assert [o["effective_from"] for o in listed(acme)] == [None]
    done = cli("prices", "delete", *GPT, env=acme)
    assert done.returncode == 0, done.stderr
    assert listed(acme) == []
    assert one_error_line(cli("prices", "delete", *GPT, env=acme)) == (
        "infraprism: no price override of model 'gpt-4o' matches in project 'acme'"
    )
    empty = cli("prices", "list", "--project", "acme", env=acme)
    assert empty.returncode == 0
    assert b"no price overrides" in empty.stderr


def test_delete_from_finds_the_day_after_the_zone_changed(acme: dict[str, str]) -> None:
    assert cli("prices", "set", *GPT, *RATES, "--from", "2025-01-01", env=acme).returncode == 0
    assert cli("projects", "set-timezone", "acme", "Asia/Tokyo", env=acme).returncode == 0

    done = cli("prices", "delete", *GPT, "--from", "2025-01-01", env=acme)

    assert done.returncode == 0, done.stderr
    assert listed(acme) == []


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["--input-per-mtok", "-1", "--output-per-mtok", "10"],
            "infraprism: --input-per-mtok: must not be negative: -1",
        ),
        (
            [*RATES, "--cache-write-per-mtok", "-0.5"],
            "infraprism: --cache-write-per-mtok: must not be negative: -0.5",
        ),
        (
            ["--input-per-mtok", "2.5", "--output-per-mtok", "ten"],
            "infraprism: --output-per-mtok: not a decimal number: 'ten'",
        ),
        (
            ["--input-per-mtok", "2.5"],
            "infraprism: --output-per-mtok: an override's own rates need both input_per_mtok and output_per_mtok",
        ),
        (["--discount-percent", "120"], "infraprism: --discount-percent: must be more than 0 and at most 100: 120"),
        ([*RATES, "--from", "2025-13-01"], "infraprism: --from: not a day of the calendar: '2025-13-01'"),
        ([*RATES, "--from", "1/1/2025"], "infraprism: --from: expected a day as YYYY-MM-DD, got '1/1/2025'"),
    ],
    ids=["negative", "negative cache", "not a number", "half a price", "discount", "no such day", "not a day"],
)
def test_bad_input_is_one_line_naming_the_option(acme: dict[str, str], args: list[str], error: str) -> None:
    assert one_error_line(cli("prices", "set", *GPT, *args, env=acme)) == error
    assert listed(acme) == []


def test_an_unknown_project_is_a_clear_error(settings_env: dict[str, str]) -> None:
    line = one_error_line(cli("prices", "set", "--project", "acne", "--model", "gpt-4o", *RATES, env=settings_env))

    assert line.startswith("infraprism: unknown project 'acne': it has no events, settings or API keys yet.")


def test_an_overlap_is_refused_naming_from_and_replace_replaces(acme: dict[str, str]) -> None:
    assert cli("prices", "set", *GPT, *RATES, "--from", "2025-01-01", env=acme).returncode == 0

    line = one_error_line(
        cli("prices", "set", *GPT, "--input-per-mtok", "3", "--output-per-mtok", "12", "--from", "2025-01-01", env=acme)
    )
    assert line == (
        "infraprism: --from: overlaps the override of 'gpt-4o' already in effect from 2025-01-01; "
        "delete it first, or replace it with --replace"
    )
    [kept] = listed(acme)
    assert kept["input_per_mtok"] == Decimal("2.5")

    done = cli(
        "prices",
        "set",
        *GPT,
        "--input-per-mtok",
        "3",
        "--output-per-mtok",
        "12",
        "--from",
        "2025-01-01",
        "--replace",
        env=acme,
    )
    assert done.returncode == 0, done.stderr
    [replaced] = listed(acme)
    assert (replaced["input_per_mtok"], replaced["output_per_mtok"]) == (3, 12)
    # Another provider, or another day, is not an overlap.
    assert cli("prices", "set", *GPT, *RATES, "--provider", "azure", "--from", "2025-01-01", env=acme).returncode == 0
    assert cli("prices", "set", *GPT, *RATES, "--from", "2025-02-01", env=acme).returncode == 0
    assert len(listed(acme)) == 3


def test_a_discount_alone_is_a_discount_on_the_catalog(acme: dict[str, str]) -> None:
    done = cli("prices", "set", *GPT, "--provider", "openai", "--discount-percent", "20", env=acme)

    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == (
        "project acme: gpt-4o (openai) from the beginning of time: 20% off the catalog"
    )
    [override] = listed(acme)
    assert override["discount_percent"] == 20
    assert override["provider"] == "openai"
    assert [override[name] for name in ("input_per_mtok", "output_per_mtok")] == [None, None]
    row = cli("prices", "list", "--project", "acme", env=acme).stdout.decode().splitlines()[1].split()
    assert row[:9] == ["gpt-4o", "openai", "(start)", "-", "-", "-", "-", "-", "20%"]
