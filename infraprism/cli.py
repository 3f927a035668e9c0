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
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from infraprism.errors import InfraprismError

if TYPE_CHECKING:
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
    rows = [[_cell(key.get(name)) for name in columns] for key in keys]
    widths = [max(len(name), *(len(row[i]) for row in rows)) for i, name in enumerate(columns)]
    _out("  ".join(name.upper().ljust(width) for name, width in zip(columns, widths, strict=True)))
    for row in rows:
        _out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0


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
