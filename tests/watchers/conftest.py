"""Watcher test fixtures: a fresh project per test."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def project() -> str:
    return f"proj-{uuid.uuid4().hex[:8]}"
