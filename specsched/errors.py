"""Exception types of specsched.

Every error raised on bad user input is an :class:`InputError` whose message names the
file, field or argument at fault and says what was expected. The command line turns any
:class:`SpecschedError` into a one-line message on stderr and a non-zero exit code, never a
traceback (docs/reliability.md lists the codes).
"""


class SpecschedError(Exception):
    """Base class of every error specsched raises on purpose."""


class InputError(SpecschedError, ValueError):
    """Bad user input: a missing or malformed file, a wrong shape, a value out of range.

    Subclasses :class:`ValueError` so that library users can catch it the usual way.

    Parameters
    ----------
    message : str
        Starts with the file, field or argument at fault.
    param : str, optional
        The function parameter at fault, when the message starts with ``"<param>: "`` and
        names no other parameter: the command line then names the flag the user typed
        instead (``delta: ...`` becomes ``--delta: ...``).
    """

    def __init__(self, message: str = "", *, param: str | None = None):
        super().__init__(message)
        self.param = param

    def __reduce__(self):  # keep ``param`` across processes (sweep workers)
        return _input_error, (type(self), str(self), self.param)


class OutputExistsError(SpecschedError, FileExistsError):
    """An output file exists already and overwriting it was not allowed (``force=False``)."""


class ResourceError(SpecschedError):
    """The machine failed the command: an output could not be written, a worker process was
    killed (out of memory, ``kill -9``). The command line exits with code 4."""


class OutputError(ResourceError, OSError):
    """An output could not be written: the disk is full, a file size or quota limit was hit,
    or the storage failed (ENOSPC, EDQUOT, EFBIG, EIO).

    The message names the file and the cause; the destination is left as it was (no partial
    file). Subclasses :class:`OSError`, as the failure it reports.
    """


class Interrupted(KeyboardInterrupt):
    """A termination signal (SIGTERM, SIGHUP) turned into an exception.

    Raised by the command line's signal handler (:mod:`specsched.cli.signals`) so that
    ``finally`` blocks run and no temporary file is left behind, as they do for Ctrl-C
    (:class:`KeyboardInterrupt`, of which this is a subclass).

    Attributes
    ----------
    signum : int
        The signal number; the command exits with ``128 + signum``.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)


def _input_error(cls, message, param):
    return cls(message, param=param)
