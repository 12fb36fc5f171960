"""The one exception type tracekit raises for problems a user can fix.

Every message is one line that says what is wrong and how to fix it. The CLI turns a
:class:`TracekitError` into ``error: <message>`` on stderr and exit code 2, never a traceback
(one ``error:`` line per entry of :attr:`TracekitError.problems` when several things are
wrong at once, e.g. a manifest with three bad fields).
"""

from __future__ import annotations

from collections.abc import Sequence


class TracekitError(Exception):
    """A problem with the user's input or environment, with an actionable one-line message.

    Attributes:
        path: the file or folder the problem is about, when there is one.
        problems: every problem found, one line each (the message alone when one).
    """

    def __init__(self, message: str, *, path: str | None = None,
                 problems: Sequence[str] = ()) -> None:
        self.path = path
        text = f"{path}: {message}" if path else message
        super().__init__(text.replace("\n", " "))
        self.problems = [(f"{path}: {m}" if path else m).replace("\n", " ")
                         for m in problems] or [str(self)]
