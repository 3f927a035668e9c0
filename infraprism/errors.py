"""The root of every error InfraPrism raises on purpose.

Each package has one base below it (`core.CoreError`, `stores.StoreError`,
`pipeline.PipelineError`, `api.errors.ApiError`, `dev.DevError`, `cli.CliError`),
and the CLI reports any of them as one line and exit code 1, never a traceback.
This module imports nothing, so every layer may use it.
"""


class InfraprismError(Exception):
    """An error with a message meant for the user."""
