"""Redis repositories both sides share: anomaly records and API keys. Above the core, below pipeline/ and api/."""

from infraprism.errors import InfraprismError


class StoreError(InfraprismError):
    """Base of the errors the shared stores raise on purpose."""
