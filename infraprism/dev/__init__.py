"""Dev tooling: `infraprism dev`, its local services and demo data. Imports everything below it."""

from infraprism.errors import InfraprismError


class DevError(InfraprismError):
    """Base of the errors the dev tooling raises on purpose."""
