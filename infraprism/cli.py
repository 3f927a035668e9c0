"""`infraprism`: the one command-line entry point for users, scripts and operators.

Each subcommand imports what it runs lazily, so a module that is missing or
broken only breaks its own subcommand (and `--help` always works). Results go
to stdout, progress and diagnostics to stderr; a failure exits non-zero with a
one-line message.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from infraprism.errors import InfraprismError

if TYPE_CHECKING:
    from infraprism.core.price_book import InvalidPrice, PriceOverride
    from infraprism.settings import Settings

log = logging.getLogger("infraprism")

Handler = Callable[[argparse.Namespace, "Settings"], int]


class CliError(InfraprismError):
    """A user-facing failure: printed as `infraprism: <message>`, exit code 1."""


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


# ---- workers ----------------------------------------------------------------------------------


def cmd_aggregator(args: argparse.Namespace, settings: Settings) -> int:
    from infraprism.pipeline import aggregator

    aggregator.main(settings, args.metrics_port)
    return 0


def cmd_detector(args: argparse.Namespace, settings: Settings) -> int:
    from infraprism.pipeline import detector

    detector.main(settings)
    return 0


def cmd_budget_watcher(args: argparse.Namespace, settings: Settings) -> int:
    from infraprism.watchers import budgets

    budgets.main(settings)
    return 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from infraprism.api import server

    host = args.host if args.host is not None else settings.api_host
    port = args.port if args.port is not None else settings.api_port
    workers = args.workers if args.workers is not None else settings.api_workers
    server.main(settings, host, port, workers)
    return 0


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from infraprism.pipeline import rebuild

    rebuild.main(settings)
    return 0


def _quiet_kafka_client() -> None:
    """A command that reads a topic to answer a person: aiokafka's INFO lines (subscriptions,
    group joins) would bury what it prints. Its warnings still show."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("aiokafka").setLevel(logging.WARNING)


def cmd_reprice(args: argparse.Namespace, settings: Settings) -> int:
    _quiet_kafka_client()
    from tqdm import tqdm

    from infraprism.core.zones import local_date, zone
    from infraprism.pipeline.reprice import RepriceError, reprice
    from infraprism.stores.projects import project_settings

    start = _parse_day(args.start, "--from")
    assert start is not None  # required
    end = _parse_day(args.end, "--to")
    if end is None:
        client, layout = _project_store(settings)
        with client:
            tz = project_settings(client, layout, args.project).tz
        end = local_date(zone(tz), int(time.time() * 1000))  # today, in the project's zone
    bar = tqdm(
        total=None,
        unit=" events",
        unit_scale=True,
        file=sys.stderr,
        desc=f"reprice {args.project} {start}..{end}",
        disable=args.quiet,
        mininterval=0.25,
    )

    def on_progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        result = asyncio.run(reprice(settings, args.project, start, end, on_progress=on_progress))
    except RepriceError as exc:
        raise CliError(str(exc)) from exc
    finally:
        bar.close()
    job = result.job
    how = "resumed and finished" if result.resumed else "re-priced"
    _out(
        f"{how} {args.project} {job.start}..{job.end} with price book version {job.version}: "
        f"{result.events_repriced} events changed, {result.cost_change_nano / 1e9:+,.6f} USD, "
        f"{result.events_read} events read"
    )
    if result.unpriced_now:
        _out(f"{result.unpriced_now} events have no price today (an override was deleted?) and keep theirs")
    if result.book_moved_to is not None:
        _out(f"prices changed while re-pricing (now version {result.book_moved_to}): run it again to apply them")
    return 0


# ---- keys -------------------------------------------------------------------------------------


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from infraprism.stores import apikeys

    if (args.entity_type is None) != (args.entity_id is None):
        raise CliError("a scoped key needs both --entity-type and --entity-id")
    try:
        scope = None if args.entity_type is None else apikeys.check_scope(args.entity_type, args.entity_id)
        expires_in = None if args.expires_in is None else apikeys.parse_duration(args.expires_in)
        key_id, key = apikeys.create_key(settings, args.project, args.name, scope, expires_in)
    except apikeys.ApiKeyError as exc:
        raise CliError(str(exc)) from exc
    seen = (
        f"project {args.project!r}" if scope is None else f"{scope.entity_type} {scope.entity_id!r} of {args.project!r}"
    )
    lifetime = "" if expires_in is None else f", for {args.expires_in}"
    _err(f"created key {key_id} for {seen}{lifetime}; it is shown once, store it now:")
    # The key alone on the last line of stdout, so scripts can `| tail -n1`.
    _out(key)
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from infraprism.stores import apikeys

    keys = apikeys.list_keys(settings)
    if args.json:
        import orjson

        _out(orjson.dumps(keys).decode())
        return 0
    if not keys:
        _err("no keys")
        return 0
    columns = list(dict.fromkeys(name for key in keys for name in key))
    _table([name.upper() for name in columns], [[_cell(key.get(name)) for name in columns] for key in keys])
    return 0


def _table(header: list[str], rows: list[list[str]]) -> None:
    """Columns padded to their widest cell, the header first."""
    widths = [max(len(name), *(len(row[i]) for row in rows)) for i, name in enumerate(header)]
    for row in [header, *rows]:
        _out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):  # a scope
        return ":".join(str(part) for part in value.values())
    return str(value)


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from infraprism.stores import apikeys

    if not apikeys.revoke_key(settings, args.key_id):
        raise CliError(f"no key with id {args.key_id!r}")
    _out(f"revoked {args.key_id}")
    return 0


# ---- projects ---------------------------------------------------------------------------------


def _project_store(settings: Settings) -> Any:
    import redis

    from infraprism.core.keys import KeyLayout

    return redis.Redis.from_url(settings.redis_dsn()), KeyLayout(settings.key_prefix)


def cmd_projects_set_timezone(args: argparse.Namespace, settings: Settings) -> int:
    from infraprism.stores import projects

    client, layout = _project_store(settings)
    with client:
        stored = projects.set_reporting_zone(client, layout, args.project, args.zone)
    _out(f"project {stored.project}: reporting zone {stored.tz} (no data is rewritten)")
    return 0


def cmd_projects_show(args: argparse.Namespace, settings: Settings) -> int:
    from infraprism.core.zones import tzdata_version
    from infraprism.stores import projects

    client, layout = _project_store(settings)
    with client:
        shown = projects.project_settings(client, layout, args.project)
    fields = {
        "project": shown.project,
        "timezone": shown.tz,
        "timezone_set_at": shown.tz_set_at,
        "tz_database": f"IANA {tzdata_version()} (the tzdata package)",
    }
    if args.json:
        import orjson

        _out(orjson.dumps(fields).decode())
        return 0
    for name, value in fields.items():
        _out(f"{name + ':':<17} {_cell(value)}")
    return 0


# ---- anomalies --------------------------------------------------------------------------------


def cmd_anomalies_dismiss(args: argparse.Namespace, settings: Settings) -> int:
    import orjson

    from infraprism.stores import anomaly_store

    record = anomaly_store.dismiss_by_id(settings, args.anomaly_id)
    if record is None:
        raise CliError(f"no anomaly with id {args.anomaly_id!r}")
    _out(orjson.dumps({**record.public(), "project": record.project, "version": record.version}).decode())
    return 0


# ---- prices -----------------------------------------------------------------------------------

# InvalidPrice.field -> the option that sets it, where the two names differ.
_PRICE_OPTIONS = {"effective_from": "--from"}
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_FIRST_DAY = date(1970, 1, 1)  # no event is older
_MAX_MODEL_CHARS = 128  # the event contract's bound (shared/spec/events.md)


def _price_error(exc: InvalidPrice, *, hint: str = "") -> CliError:
    option = _PRICE_OPTIONS.get(exc.field, "--" + exc.field.replace("_", "-"))
    return CliError(f"{option}: {exc.message}{hint}")


def _parse_day(text: str | None, option: str = "--from") -> date | None:
    """A day option YYYY-MM-DD (in the project's reporting zone); None when absent (for
    `prices set --from`, the beginning of time)."""
    if text is None:
        return None
    if not _DAY.fullmatch(text):
        raise CliError(f"{option}: expected a day as YYYY-MM-DD, got {text!r}")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise CliError(f"{option}: not a day of the calendar: {text!r}") from None
    if day < _FIRST_DAY:
        raise CliError(f"{option}: before {_FIRST_DAY}; leave --from out for the beginning of time")
    return day


def _check_names(args: argparse.Namespace) -> None:
    if not 1 <= len(args.model) <= _MAX_MODEL_CHARS:
        raise CliError(f"--model: must be 1-{_MAX_MODEL_CHARS} characters, as an event's model")
    if args.provider is not None and not args.provider:
        raise CliError("--provider: must not be empty; leave it out for an override of every provider")


def _run_with_redis(settings: Settings, work: Callable[[Any, Any], Awaitable[Any]]) -> Any:
    """`work(redis, layout)` on an asyncio Redis client made, pinged and closed here."""
    import redis.asyncio as aioredis

    from infraprism.core.keys import KeyLayout

    async def run() -> Any:
        client = aioredis.Redis.from_url(settings.redis_dsn())
        try:
            await client.ping()  # a bad address fails here, loudly
            return await work(client, KeyLayout(settings.key_prefix))
        finally:
            await client.aclose()

    return asyncio.run(run())


def _rate_text(value: Decimal | None) -> str:
    # Positional: a normalized 10 is Decimal("1E+1"), which str() prints as such.
    return "-" if value is None else format(value, "f")


def _cache_rate_text(override: PriceOverride, rate: Decimal | None) -> str:
    """A cache rate as it applies: the input rate when none was set."""
    if override.is_discount_only:
        return "-"
    return _rate_text(override.input_per_mtok if rate is None else rate)


def _describe_override(override: PriceOverride) -> str:
    """One line: which model, from when, at what price."""
    who = override.model + ("" if override.provider is None else f" ({override.provider})")
    since = "the beginning of time" if override.effective_from is None else override.effective_from
    parts = []
    if not override.is_discount_only:
        parts.append(f"input {_rate_text(override.input_per_mtok)}, output {_rate_text(override.output_per_mtok)}")
        for name, value in (
            ("cache read", override.cache_read_per_mtok),
            ("cache write", override.cache_write_per_mtok),
        ):
            parts.append(f"{name} {'= input' if value is None else _rate_text(value)}")
        parts[-1] += " $/Mtok"
    if override.discount_percent is not None:
        off = f"{_rate_text(override.discount_percent)}% off"
        parts.append(off + (" the catalog" if override.is_discount_only else ""))
    return f"{who} from {since}: {', '.join(parts)}"


def cmd_prices_set(args: argparse.Namespace, settings: Settings) -> int:
    import dataclasses

    from infraprism.core.price_book import InvalidPrice, PriceOverride, parse_discount, parse_rate
    from infraprism.stores import prices

    _check_names(args)
    day = _parse_day(args.effective_from)
    try:
        # Checked before Redis is asked anything; the instant comes from the project's zone.
        override = PriceOverride(
            model=args.model,
            provider=args.provider,
            effective_from=None if day is None else day.isoformat(),
            effective_from_ms=0,
            input_per_mtok=parse_rate("input_per_mtok", args.input_per_mtok),
            output_per_mtok=parse_rate("output_per_mtok", args.output_per_mtok),
            cache_read_per_mtok=parse_rate("cache_read_per_mtok", args.cache_read_per_mtok),
            cache_write_per_mtok=parse_rate("cache_write_per_mtok", args.cache_write_per_mtok),
            discount_percent=parse_discount(args.discount_percent),
        )
    except InvalidPrice as exc:
        raise _price_error(exc) from exc

    async def put(redis: Any, layout: Any) -> PriceOverride:
        starts_ms = await prices.effective_from_ms(redis, layout, args.project, day)
        return await prices.set_override(
            redis,
            layout,
            args.project,
            dataclasses.replace(override, effective_from_ms=starts_ms),
            replace=args.replace,
        )

    try:
        stored = _run_with_redis(settings, put)
    except InvalidPrice as exc:
        hint = " with --replace" if exc.field == "effective_from" and not args.replace else ""
        raise _price_error(exc, hint=hint) from exc
    _out(f"project {args.project}: {_describe_override(stored)}")
    return 0


def cmd_prices_list(args: argparse.Namespace, settings: Settings) -> int:
    from infraprism.stores import prices

    overrides = _run_with_redis(settings, lambda redis, layout: prices.list_overrides(redis, layout, args.project))
    # A later override of the same model and provider ends the earlier one (core/price_book.py);
    # the list is ordered by model, provider and start, so it is the next one.
    until: list[str | None] = [None] * len(overrides)
    for index, (earlier, later) in enumerate(zip(overrides, overrides[1:], strict=False)):
        if (later.model, later.provider) == (earlier.model, earlier.provider):
            until[index] = later.effective_from
    if args.json:
        import orjson

        answer = [o.to_json() | {"effective_until": end} for o, end in zip(overrides, until, strict=True)]
        _out(orjson.dumps(answer).decode())
        return 0
    if not overrides:
        _err(f"no price overrides in project {args.project!r}: the catalog prices its events")
        return 0
    header = ["MODEL", "PROVIDER", "FROM", "UNTIL", "INPUT/MTOK", "OUTPUT/MTOK", "CACHE_READ/MTOK", "CACHE_WRITE/MTOK"]
    rows = [
        [
            o.model,
            o.provider or "(any)",
            o.effective_from or "(start)",
            end or "-",
            _rate_text(o.input_per_mtok),
            _rate_text(o.output_per_mtok),
            _cache_rate_text(o, o.cache_read_per_mtok),
            _cache_rate_text(o, o.cache_write_per_mtok),
            "-" if o.discount_percent is None else f"{_rate_text(o.discount_percent)}%",
            o.set_at or "-",
        ]
        for o, end in zip(overrides, until, strict=True)
    ]
    _table([*header, "DISCOUNT", "SET_AT"], rows)
    return 0


def cmd_prices_delete(args: argparse.Namespace, settings: Settings) -> int:
    from infraprism.stores import prices

    _check_names(args)
    day = _parse_day(args.effective_from)

    async def drop(redis: Any, layout: Any) -> list[PriceOverride]:
        return await prices.delete_overrides(
            redis, layout, args.project, args.model, provider=args.provider, effective_from=day
        )

    deleted = _run_with_redis(settings, drop)
    _out(f"project {args.project}: deleted {len(deleted)} price override{'s' if len(deleted) != 1 else ''}")
    for override in deleted:
        _out(f"  {_describe_override(override)}")
    return 0


# ---- dead letters -----------------------------------------------------------------------------


def cmd_dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    _quiet_kafka_client()
    from infraprism.pipeline import dlq

    summaries = asyncio.run(dlq.summarise(settings, args.reason))
    total = sum(summary.count for summary in summaries)
    if args.json:
        import orjson

        document = {"topic": settings.dlq_topic, "total": total, "reasons": [s.to_json() for s in summaries]}
        _out(orjson.dumps(document).decode())
        return 0
    matching = "" if args.reason is None else f" whose reason contains {args.reason!r}"
    if not summaries:
        _err(f"no dead letters in {settings.dlq_topic}{matching}")
        return 0
    _err(f"{total} dead letters in {settings.dlq_topic}{matching}, {len(summaries)} reasons:")
    _out(f"{'COUNT':>7}  {'RE-DRIVEN':>9}  REASON")
    for summary in summaries:
        _out(f"{summary.count:>7}  {summary.redriven:>9}  {summary.reason}")
        for example in summary.examples:
            exact = "" if example.reason == summary.reason else f"  [{example.reason}]"
            _out(
                f"{'':20}e.g. {example.source} (dlq {example.dlq_partition}@{example.dlq_offset}): "
                f"{example.payload_prefix}{exact}"
            )
    return 0


def cmd_dlq_redrive(args: argparse.Namespace, settings: Settings) -> int:
    _quiet_kafka_client()
    from tqdm import tqdm

    from infraprism.pipeline import dlq

    bar = tqdm(
        total=None,
        unit=" letters",
        file=sys.stderr,
        desc=f"redrive {settings.dlq_topic} -> {settings.events_topic}",
        disable=args.quiet or args.json,
        mininterval=0.25,
    )

    def on_progress(read: int, total: int) -> None:
        bar.total = total
        bar.update(read - bar.n)

    try:
        result = asyncio.run(dlq.redrive(settings, args.reason, dry_run=args.dry_run, on_progress=on_progress))
    finally:
        bar.close()
    if args.json:
        import orjson

        _out(orjson.dumps(result.to_json()).decode())
        return 0
    verb = "would re-drive" if args.dry_run else "re-drove"
    _out(f"{verb} {result.redriven.total()} dead letters to {settings.events_topic}")
    _counts(result.redriven)
    if result.still_failing:
        _out(f"still failing, left in {settings.dlq_topic}: {result.still_failing.total()}")
        _counts(result.still_failing)
    if result.not_kept:
        _out(f"not re-drivable, the dead letter does not hold the whole message: {result.not_kept.total()}")
        _counts(result.not_kept)
    skipped = [
        (result.redriven_before, "re-driven before"),
        (result.copies, "copy of a re-driven event" if result.copies == 1 else "copies of a re-driven event"),
        (result.already_counted, "already counted"),
        (result.waiting, "not applied by the aggregator yet (run again later)"),
        (result.scanned - result.matched, "of other reasons"),
    ]
    if any(count for count, _ in skipped):
        _out("skipped: " + ", ".join(f"{count} {what}" for count, what in skipped if count))
    return 0


def _counts(counts: Counter[str]) -> None:
    for what, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        _out(f"{count:>7}  {what}")


# ---- producers --------------------------------------------------------------------------------


def _open_input(path: str) -> tuple[BinaryIO, int | None]:
    """The byte stream to replay and its size in bytes when known (for the progress bar)."""
    if path == "-":
        return sys.stdin.buffer, None
    file = Path(path)
    if not file.is_file():
        raise CliError(f"{path}: no such file")
    return file.open("rb"), file.stat().st_size


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from infraprism.pipeline.replay import ReplayError, iter_lines, replay_lines

    stream, size = _open_input(args.file)
    # Progress in bytes read (exact for a file, running count for stdin) and
    # the lines acknowledged so far as the postfix.
    bar = tqdm(
        total=size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        desc=f"replay -> {settings.events_topic}",
        disable=args.quiet,
        mininterval=0.25,
    )
    acked = 0

    def on_progress(count: int) -> None:
        nonlocal acked
        acked += count
        bar.set_postfix_str(f"{acked:,} lines", refresh=False)

    try:
        sent = asyncio.run(replay_lines(settings, iter_lines(_counting(stream, bar)), on_progress=on_progress))
    except ReplayError as exc:
        bar.close()
        raise CliError(f"{exc}; {acked} lines were sent before it") from exc
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    bar.close()
    _out(f"sent {sent} lines to {settings.events_topic}")
    return 0


def _counting(stream: BinaryIO, bar: Any) -> Any:
    """The stream's lines, advancing `bar` by the bytes read (in chunks, to keep it cheap)."""
    pending = 0
    for line in stream:
        pending += len(line)
        if pending >= 1 << 20:
            bar.update(pending)
            pending = 0
        yield line
    bar.update(pending)


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    from infraprism.pipeline.decode import judge
    from infraprism.pipeline.replay import send_event

    raw = os.fsencode(args.event)  # the bytes as given, even when they are not UTF-8
    verdict = judge(raw)
    if isinstance(verdict, str):
        _err(f"warning: {verdict}; sending it anyway, it will be dead-lettered")
    meta = asyncio.run(send_event(settings, raw))
    _out(f"sent 1 event to {meta.topic} partition {meta.partition} offset {meta.offset}")
    return 0


# ---- the embedded stack -----------------------------------------------------------------------


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from infraprism.dev import devstack

    return devstack.main(
        settings,
        demo=args.demo,
        port=args.port,
        log_dir=args.log_dir,
        demo_days=args.demo_days,
        demo_seed=args.demo_seed,
    )


# ---- the parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infraprism",
        description="Self-hosted LLM cost analytics: Kafka events -> Redis rollups -> REST API.",
        epilog="Configuration: INFRAPRISM_* environment variables (docs/configuration.md).",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the process (default: INFO)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Handler, help_text: str, **kwargs: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, **kwargs)
        sub.set_defaults(handler=handler)
        return sub

    sub = command("aggregator", cmd_aggregator, "run the aggregation worker (events topic -> Redis rollups)")
    sub.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="N",
        help="serve Prometheus metrics on this port (default: INFRAPRISM_METRICS_PORT, off)",
    )

    command("detector", cmd_detector, "run the anomaly detection worker")
    command("budget-watcher", cmd_budget_watcher, "raise budget alerts as spend crosses their thresholds")

    sub = command("api", cmd_api, "serve the analytics API with uvicorn")
    sub.add_argument("--host", default=None, help="bind address (default: INFRAPRISM_API_HOST)")
    sub.add_argument("--port", type=int, default=None, help="port (default: INFRAPRISM_API_PORT)")
    sub.add_argument(
        "--workers", type=int, default=None, help="uvicorn worker processes (default: INFRAPRISM_API_WORKERS, 1)"
    )

    keys = commands.add_parser("keys", help="manage API keys", description="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    sub = key_commands.add_parser(
        "create",
        help="create a key bound to one project (or one entity of it); prints the key alone on the last line",
        description="Create an API key bound to one project, or with --entity-type and --entity-id to one "
        "entity of it. The key is printed once, alone on the last line of stdout; only its hash is stored.",
    )
    sub.add_argument("--project", required=True, help="the project the key may read")
    sub.add_argument("--name", default=None, help="a label to recognise the key by")
    sub.add_argument(
        "--entity-type", default=None, help="with --entity-id: the key sees only this entity (a scoped key)"
    )
    sub.add_argument("--entity-id", default=None, help="with --entity-type: the one entity the key sees")
    sub.add_argument(
        "--expires-in",
        default=None,
        metavar="DURATION",
        help="the key expires after 3600, 30m, 24h or 7d (default: never)",
    )
    sub.set_defaults(handler=cmd_keys_create)
    sub = key_commands.add_parser("list", help="list keys (never the secrets)", description="list keys")
    sub.add_argument("--json", action="store_true", help="print one JSON array instead of a table")
    sub.set_defaults(handler=cmd_keys_list)
    sub = key_commands.add_parser("revoke", help="revoke a key by its id", description="revoke a key")
    sub.add_argument("key_id", metavar="ID", help="the key id shown by `keys create` and `keys list`")
    sub.set_defaults(handler=cmd_keys_revoke)

    projects = commands.add_parser(
        "projects", help="show or set a project's settings", description="show or set a project's settings"
    )
    project_commands = projects.add_subparsers(dest="projects_command", metavar="ACTION", required=True)
    sub = project_commands.add_parser(
        "set-timezone",
        help="set the zone a project's analytics answer in when a request names no tz",
        description="Set the project's reporting zone, an IANA name such as Europe/Berlin. Requests "
        "without `tz` answer in it. Nothing stored is rewritten: the rollups are kept in UTC.",
    )
    sub.add_argument("project", metavar="PROJECT")
    sub.add_argument("zone", metavar="ZONE", help="an IANA zone name, e.g. America/Los_Angeles or UTC")
    sub.set_defaults(handler=cmd_projects_set_timezone)
    sub = project_commands.add_parser("show", help="show a project's settings", description="show a project's settings")
    sub.add_argument("project", metavar="PROJECT")
    sub.add_argument("--json", action="store_true", help="print one JSON object")
    sub.set_defaults(handler=cmd_projects_show)

    price_parser = commands.add_parser(
        "prices",
        help="a project's own prices of models, over the catalog's",
        description="Set, list and delete a project's price overrides. An event without `cost` is priced by "
        "its project's override for its model in effect at its time (one naming its provider first), else by "
        "the genai-prices catalog, else it is a dead letter (docs/pricing.md). Events already counted keep "
        "their price.",
    )
    price_commands = price_parser.add_subparsers(dest="prices_command", metavar="ACTION", required=True)
    sub = price_commands.add_parser(
        "set",
        help="set a model's price from a day on; a later override of the model ends an earlier one",
        description="Set a model's price in a project: its own rates in dollars per million tokens "
        "(--input-per-mtok and --output-per-mtok; the cache rates default to the input rate), a discount on "
        "the catalog's price (--discount-percent alone), or both (a discount on its own rates). It applies "
        "from --from on, until a later override of the same model and provider.",
    )
    sub.add_argument("--project", required=True, help="the project, which must have events, settings or keys")
    sub.add_argument("--model", required=True, help="the model, exactly as events name it")
    sub.add_argument("--provider", default=None, help="only events of this provider (default: any; one naming it wins)")
    for option, what in (
        ("--input-per-mtok", "input tokens, e.g. 2.5"),
        ("--output-per-mtok", "output tokens (reasoning tokens too)"),
        ("--cache-read-per-mtok", "prompt-cache reads (default: the input rate)"),
        ("--cache-write-per-mtok", "prompt-cache writes (default: the input rate)"),
    ):
        sub.add_argument(option, default=None, metavar="USD", help=f"dollars per million {what}")
    sub.add_argument(
        "--discount-percent",
        default=None,
        metavar="PCT",
        help="percent off: of the catalog's price alone, or of the rates given (more than 0, at most 100)",
    )
    sub.add_argument(
        "--from",
        dest="effective_from",
        default=None,
        metavar="YYYY-MM-DD",
        help="the first day it applies, in the project's reporting zone (default: the beginning of time)",
    )
    sub.add_argument(
        "--replace", action="store_true", help="replace an override of the same model, provider and --from"
    )
    sub.set_defaults(handler=cmd_prices_set)
    sub = price_commands.add_parser(
        "list", help="list a project's price overrides", description="list a project's price overrides"
    )
    sub.add_argument("--project", required=True)
    sub.add_argument("--json", action="store_true", help="print one JSON array instead of a table")
    sub.set_defaults(handler=cmd_prices_list)
    sub = price_commands.add_parser(
        "delete",
        help="delete a model's price overrides; its events are priced by the catalog again",
        description="Delete a model's price overrides in a project: every one, or only those of --provider "
        "and of --from. Events already counted keep their price.",
    )
    sub.add_argument("--project", required=True)
    sub.add_argument("--model", required=True)
    sub.add_argument("--provider", default=None, help="only the overrides naming this provider")
    sub.add_argument(
        "--from", dest="effective_from", default=None, metavar="YYYY-MM-DD", help="only the one from this day"
    )
    sub.set_defaults(handler=cmd_prices_delete)

    dlq_parser = commands.add_parser(
        "dlq",
        help="summarise the dead letters, or re-drive those that would now pass",
        description="The dead-letter topic (INFRAPRISM_DLQ_TOPIC) holds every refused message with its reason.",
    )
    dlq_commands = dlq_parser.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    sub = dlq_commands.add_parser(
        "list",
        help="the dead letters by reason, with counts and examples",
        description="Read the dead-letter topic to its end and summarise it by reason (the offending value "
        "masked), with how many of each were re-driven and up to three examples.",
    )
    sub.add_argument("--reason", default=None, metavar="TEXT", help="only reasons containing TEXT (any case)")
    sub.add_argument("--json", action="store_true", help="print one JSON object")
    sub.set_defaults(handler=cmd_dlq_list)
    sub = dlq_commands.add_parser(
        "redrive",
        help="re-submit the dead letters that would now pass, each once",
        description="Judge every dead letter again with the current prices and re-submit those that pass "
        "to the events topic, as they arrived. Each is counted once: a second run, or one after a crash, "
        "adds nothing. Those that still fail stay in the topic with their reason.",
    )
    sub.add_argument("--reason", default=None, metavar="TEXT", help="only reasons containing TEXT (any case)")
    sub.add_argument("--dry-run", action="store_true", help="say what would be re-driven; send nothing")
    sub.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sub.set_defaults(handler=cmd_dlq_redrive)

    anomalies = commands.add_parser("anomalies", help="manage anomalies", description="manage anomalies")
    anomaly_commands = anomalies.add_subparsers(dest="anomalies_command", metavar="ACTION", required=True)
    sub = anomaly_commands.add_parser(
        "dismiss",
        help="dismiss an anomaly; it is not raised again for the same episode",
        description="dismiss an anomaly; it is not raised again for the same episode",
    )
    sub.add_argument("anomaly_id", metavar="ID", help="the anomaly id")
    sub.set_defaults(handler=cmd_anomalies_dismiss)

    command("rebuild", cmd_rebuild, "recompute every aggregate from the events still in Kafka")

    sub = command(
        "reprice",
        cmd_reprice,
        "price a project's days again with today's prices, from the events still in Kafka (exactly once)",
    )
    sub.add_argument("--project", required=True)
    sub.add_argument("--from", dest="start", required=True, metavar="DATE", help="first day, in the project's zone")
    sub.add_argument("--to", dest="end", default=None, metavar="DATE", help="last day, inclusive (default: today)")
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    sub = command(
        "replay",
        cmd_replay,
        "produce JSON lines to the events topic (each line as-is; bad ones are dead-lettered)",
    )
    sub.add_argument("file", metavar="FILE", help="a file of JSON lines, or - for stdin")
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    sub = command("send", cmd_send, "produce one event, given as JSON, to the events topic")
    sub.add_argument("event", metavar="JSON", help='e.g. \'{"event_id": "e1", "timestamp": ...}\'')

    sub = command(
        "dev",
        cmd_dev,
        "run the whole stack here (broker, Redis, aggregator, detector, API) until Ctrl-C",
    )
    sub.add_argument("--demo", action="store_true", help="also generate and replay a demo dataset")
    sub.add_argument(
        "--port",
        type=int,
        default=None,
        help="API port (default: INFRAPRISM_API_PORT, or a free port if that one is taken)",
    )
    sub.add_argument("--log-dir", default=".infraprism/logs", help="where the workers' logs go")
    sub.add_argument("--demo-days", type=int, default=35, help="days of demo traffic, ending today")
    sub.add_argument("--demo-seed", type=int, default=7, help="seed of the demo generator")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    from aiokafka.errors import KafkaConnectionError
    from pydantic import ValidationError
    from redis.exceptions import ConnectionError as RedisConnectionError

    from infraprism.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        _err(f"infraprism: invalid configuration:\n{exc}")
        return 2
    try:
        return int(args.handler(args, settings))
    except InfraprismError as exc:  # CliError and every package's base (infraprism/errors.py)
        _err(f"infraprism: {exc}")
        return 1
    except RedisConnectionError as exc:
        _err(f"infraprism {args.command}: cannot reach Redis (INFRAPRISM_REDIS_URL): {exc}")
        return 1
    except KafkaConnectionError as exc:
        _err(f"infraprism {args.command}: cannot reach Kafka at {settings.kafka_bootstrap}: {exc}")
        return 1
    except ImportError as exc:
        _err(f"infraprism {args.command}: not available in this build ({exc})")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
