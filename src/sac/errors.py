"""The one exception type for user mistakes.

Anything raised as :class:`SACError` is reported by the ``sac`` command as a single line
(``error: <message>``) with exit code 2, never as a traceback. Raise it for bad input the user
can fix (a missing file, an unknown backbone name, a malformed point list); let genuine bugs
raise ordinary exceptions so they stay visible.
"""


class SACError(Exception):
    """A user-facing error: the message must say what is wrong and, where possible, how to fix it."""
