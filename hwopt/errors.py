"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug and keeps
its traceback. Raise it with a message that says what was wrong and what to do instead.
"""


class HwoptError(Exception):
    """Bad input or an unmet precondition the user can fix (exit code 2 in the CLI)."""


class NotAvailableError(HwoptError):
    """A runtime, converter or tool is not installed or cannot run on this machine."""
