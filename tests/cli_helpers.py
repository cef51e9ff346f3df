"""Running the ``specsched`` command in-process from tests, and checking its refusals."""

from specsched.cli import main


def run(argv, capsys):
    """Run ``specsched ARGV`` in-process; ``(exit code, stdout, stderr)``."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse refusals
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def refused(code, err, *needles):
    """Exit 2 with one line on stderr, no traceback, holding every ``needle``."""
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return True
