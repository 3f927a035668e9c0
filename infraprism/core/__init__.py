"""The pure core: the event contract, money, pricing, cells, buckets, keys, zones. No I/O."""

from infraprism.errors import InfraprismError


class CoreError(InfraprismError):
    """Base of the errors the core raises on purpose (a price, a zone, a range it cannot serve)."""
