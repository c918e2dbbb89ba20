"""The one exception type the CLI turns into a readable line and a non-zero exit code."""


class ResganError(Exception):
    """An expected error: bad input, bad params, a missing model. Its message is for the user."""

    exit_code = 1


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when the message is empty): libraries
    such as MLflow put whole server answers in theirs, and a user needs the line that says what failed."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
