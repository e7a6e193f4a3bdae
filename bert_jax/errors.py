"""The user-facing error type, in a module of its own so that any module can raise it without importing
config.py (which reads the corpus's language tags through data/languages.py)."""


class InputError(ValueError):
    """A problem with what the user gave us (config, files, corpus), with a message saying how to fix it.

    Entrypoints print these as one line and exit non-zero instead of showing a stack trace.
    """


def require(condition: bool, message: str) -> None:
    """Raise InputError(message) unless `condition`: the one-line check every validator is written in."""
    if not condition:
        raise InputError(message)
