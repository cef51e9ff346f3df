"""Exception types of specsched.

Every error raised on bad user input is an :class:`InputError` whose message names the
file, field or argument at fault and says what was expected. The command line turns any
:class:`SpecschedError` into a one-line message on stderr and a non-zero exit code, never a
traceback.
"""


class SpecschedError(Exception):
    """Base class of every error specsched raises on purpose."""


class InputError(SpecschedError, ValueError):
    """Bad user input: a missing or malformed file, a wrong shape, a value out of range.

    Subclasses :class:`ValueError` so that library users can catch it the usual way.
    """


class OutputExistsError(SpecschedError, FileExistsError):
    """An output file exists already and overwriting it was not allowed (``force=False``)."""
