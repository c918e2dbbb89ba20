"""The one exception type the CLI turns into a readable line and a non-zero exit code."""


class ResganError(Exception):
    """An expected error: bad input, bad params, a missing model. Its message is for the user."""

    exit_code = 1
