"""The anomaly, alert and detector keys (KeyLayout). Pinned: they hold state that is not derived
from the events, so a release must find them where the last one wrote them (docs/redis-keys.md)."""

from __future__ import annotations

from fnmatch import fnmatchcase

from infraprism.core.keys import KeyLayout, entity_member

LAYOUT = KeyLayout("ip")
KEYS = {
    LAYOUT.anomaly("acme", "anomaly_1"): "ip:v2:acme:an:anomaly_1",
    LAYOUT.anomaly_index("acme"): "ip:v2:acme:ai",
    LAYOUT.anomaly_owners(): "ip:v2:anomaly-owner",
    LAYOUT.anomaly_outbox("acme"): "ip:v2:acme:det:outbox",
    LAYOUT.alert_cursors("acme"): "ip:v2:acme:det:outbox-cursor",
    LAYOUT.alert_delivered("acme", "webhook"): "ip:v2:acme:det:delivered:webhook",
    LAYOUT.detector_history("acme", ""): "ip:v2:acme:det:ht",
    LAYOUT.detector_history("acme", entity_member("customer", "big")): "ip:v2:acme:det:h:customer\x1fbig",
    LAYOUT.detector_episodes("acme"): "ip:v2:acme:det:episodes",
}


def test_the_keys_are_where_they_were() -> None:
    assert list(KEYS) == list(KEYS.values())


def test_a_rebuild_leaves_them_alone() -> None:
    patterns = LAYOUT.derived_patterns("events", "agg")
    assert not [key for key in KEYS if any(fnmatchcase(key, pattern) for pattern in patterns)]
