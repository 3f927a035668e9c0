"""Kafka -> Redis: the aggregator, the detector and the tools that feed them. Imports the core and stores."""

from infraprism.errors import InfraprismError


class PipelineError(InfraprismError):
    """Base of the errors the pipeline raises on purpose."""
