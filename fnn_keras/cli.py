"""Helpers shared by the command-line entry points."""

from __future__ import annotations

import argparse
import logging
import sys


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose usage errors are one `error:` line.

    The standard parser prints its whole usage block before the error. The
    commands of this package report every bad input in one line and exit 2;
    the usage stays in `--help`.

    Example:

    ```python
    parser = ArgumentParser(prog="python -m fnn_keras.train")
    ```
    """

    def error(self, message):
        fail(f"{message}. See {self.prog} --help.")


def setup_logging(quiet: bool) -> None:
    """Send log records to stderr: INFO and up, or WARNING and up when quiet."""
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # TensorFlow's INFO records describe every collective op it sets up.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line `error:` message to stderr and exit with `code`.

    Code 2 means bad input; other codes are documented by each command.
    """
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def os_error_message(error: OSError) -> str:
    """Describe an `OSError` in one line: the reason and the path."""
    reason = error.strerror or str(error)
    return f"{reason}: {error.filename}" if error.filename else reason


def add_data_file_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags that read `--data` with other columns or encoding than the run's."""
    parser.add_argument(
        "--text-column", help="Text column of --data. Default: the run's text column."
    )
    parser.add_argument(
        "--text-pair-column",
        help="Second-text column of --data, for a sentence-pair run. Default: the run's.",
    )
    parser.add_argument(
        "--label-column", help="Label column of --data. Default: the run's label column."
    )
    parser.add_argument("--encoding", help="Encoding of --data. Default: the run's encoding.")
