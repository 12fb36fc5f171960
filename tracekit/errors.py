"""The one exception type tracekit raises for problems a user can fix.

Every message is one line that says what is wrong and how to fix it. The CLI turns a
:class:`TracekitError` into ``error: <message>`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations


class TracekitError(Exception):
    """A problem with the user's input or environment, with an actionable one-line message.

    Attributes:
        path: the file or folder the problem is about, when there is one.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        text = f"{path}: {message}" if path else message
        super().__init__(text.replace("\n", " "))
