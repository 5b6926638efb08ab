"""Shared by the export scripts' unit tests."""
import contextlib
import io
import unittest


def parse_error(parse_args, argv) -> str:
    """The message argparse prints when parse_args(argv) exits with status 2."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), unittest.TestCase().assertRaises(SystemExit) as raised:
        parse_args(argv)
    assert raised.exception.code == 2, raised.exception.code
    return stderr.getvalue()
