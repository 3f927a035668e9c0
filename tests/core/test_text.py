from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from infraprism.core.text import as_text, rfc3339_ms, rfc3339_now


def test_as_text_reads_decoded_and_raw_replies() -> None:
    assert as_text(b"caf\xc3\xa9") == "café"
    assert as_text("café") == "café"
    assert as_text(42) == "42"


def test_rfc3339_ms_shows_milliseconds_only_when_present() -> None:
    assert rfc3339_ms(1_736_942_400_000) == "2025-01-15T12:00:00Z"
    assert rfc3339_ms(1_736_942_400_007) == "2025-01-15T12:00:00.007Z"
    assert rfc3339_ms(0) == "1970-01-01T00:00:00Z"


@given(st.integers(min_value=0, max_value=253_402_300_799_999))
def test_rfc3339_ms_parses_back_to_the_same_instant(ts_ms: int) -> None:
    text = rfc3339_ms(ts_ms)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert round(parsed.timestamp() * 1000) == ts_ms


def test_rfc3339_now_is_utc_to_the_second() -> None:
    text = rfc3339_now()
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert text.endswith("Z")
    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 5
