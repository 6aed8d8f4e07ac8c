"""What every command line of the project does the same way: user errors, signals and closed pipes.

    def main(argv=None) -> int:
        args = parse_args(argv)
        return run(lambda: work(args))

`run` turns what can go wrong into what a Unix tool does, never a traceback:
    a user error (InputError, WeightsError, ValueError)   one `error: ...` line on stderr, exit 2
    a bad option (ArgumentParser, below)                  the same: `error: ...; see prog --help`
    stdout cannot be written (full disk, closed)          `error: cannot write the output: ...`, exit 2
    the reader of stdout went away (`| head -1`)          quiet, exit 0
    Ctrl-C                                                `interrupted`, exit 130
    SIGTERM                                               `terminated`, exit 143 (raised as Terminated, so
                                                          it unwinds like Ctrl-C: atomic writes leave nothing)
The shard writer (minilm.corpus) catches both signals itself, to finish the shard in hand first.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable

from .textio import InputError
from .weights import WeightsError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as a shell reports a process stopped by Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143
USER_ERRORS: tuple[type[Exception], ...] = (InputError, WeightsError, ValueError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad option is one `error:` line pointing at --help, not the whole usage block."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"error: {message}; see {self.prog} --help\n")


class Terminated(BaseException):
    """SIGTERM, raised where the program is, so that it unwinds as Ctrl-C's KeyboardInterrupt does."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def run(work: Callable[[], int], user_errors: tuple[type[Exception], ...] = USER_ERRORS) -> int:
    """Run a command's work and return its exit status (see the module docstring)."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    try:
        if sys.stdout is None:  # started with stdout closed (`>&-`): results would go nowhere
            raise InputError("standard output is closed; redirect it to a file, or give --output")
        status = work()
        sys.stdout.flush()  # a closed pipe shows here, inside the try, and not at exit
        return status
    except user_errors as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: not an error; point stdout at /dev/null so the exit flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # what is left: stdout or stderr on a full disk (`> /dev/full`); files have their own errors
        _quiet_stdout()
        print(f"error: cannot write the output: {e.strerror or e}{f' ({e.filename})' if e.filename else ''}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("terminated", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _quiet_stdout() -> None:
    """Drop what is still buffered for a stdout that cannot take it, so the exit flush raises nothing."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass
