"""`infraprism send` with each poison message seen in the field: one clear warning line, exit 0, no traceback.

Run as users run it, as a subprocess, against the real broker; the message is
sent as given (the aggregator will dead-letter it), so the topic is read back.
"""

from __future__ import annotations

import os
import re

import pytest

from infraprism.pipeline.decode import judge
from tests.pipeline.poison import WHAT_WAS_SEEN, Poison, non_utf8_line
from tests.test_cli import cli, read_topic

# Linux refuses one argument over 128 KiB (MAX_ARG_STRLEN), so the 800 kB non-UTF-8 line
# of the field goes through `send` at 100 kB; the whole line is the decoder's test.
ARGUMENT_MAX_BYTES = 100_000
CASES = [
    Poison(p.name.replace("800 kB", "100 kB"), non_utf8_line(ARGUMENT_MAX_BYTES), p.reason_start)
    if len(p.raw) > ARGUMENT_MAX_BYTES
    else p
    for p in WHAT_WAS_SEEN
]


@pytest.mark.parametrize("poison", CASES, ids=lambda p: p.name)
async def test_send_warns_in_one_line_and_sends_the_poison_as_given(settings, settings_env, poison):
    done = cli("--log-level", "WARNING", "send", os.fsdecode(poison.raw), env=settings_env)

    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 0, stderr
    assert "Traceback" not in stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: {judge(poison.raw)}; sending it anyway, it will be dead-lettered"], stderr
    assert warnings[0].startswith(f"warning: {poison.reason_start}")
    assert len(warnings[0]) < 300  # a reason, not a dump of the message
    assert re.fullmatch(rf"sent 1 event to {settings.events_topic} partition \d+ offset 0\n", done.stdout.decode())
    [(_, value)] = await read_topic(settings, settings.events_topic, expect=1)
    assert value == poison.raw
