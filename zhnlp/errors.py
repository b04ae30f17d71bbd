"""The one error type a stage reports as a single ``error:`` line, without a traceback.

Raise a subclass for mistakes in the user's data or params (the message names the file and line,
or the params key, the bad value and what is allowed); anything else is a bug and keeps its
traceback.
"""


class UserError(ValueError):
    """A mistake in the user's input or params; ``str(err)`` is the whole report."""
