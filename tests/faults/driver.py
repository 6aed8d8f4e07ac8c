"""Run a command line of the project with faults injected, as a hostile world would:

    python tests/faults/driver.py [--at POINT:N:ACTION ...] [--signal-in MODULE.FUNCTION:SIGNAL]
                                  [--refuse-writes DIR:ERRNO] -- MODULE ARGS...

--at POINT:N:ACTION   at the Nth time the shard writer reaches POINT (minilm.corpus.shards._reached:
                      before-first-manifest, after-npy, after-ids, after-texts, before-manifest), `kill` the process
                      with SIGKILL (no handler, no clean-up), `stop` it with SIGSTOP (it keeps its lock),
                      or send it SIGTERM (`term`) or SIGINT (`int`)
--signal-in F:SIGNAL  send SIGNAL (SIGINT, SIGTERM) to the process as F starts, e.g. during the model load
--refuse-writes D:E   every file or folder created under D fails with errno E (ENOSPC, EROFS), through an
                      audit hook: the stand-in for a full or read-only disk where no tmpfs can be mounted

Then runs `python -m MODULE ARGS...` in this process (its main(argv)) and exits with its status.

Ctrl-C is Python's default SIGINT handler here, whatever this process inherited, as for a command
typed at a terminal. A test run started as a background job (`bash .ci/run &`, `nohup`) inherits
SIGINT ignored, Python then installs no KeyboardInterrupt handler, and a SIGINT sent by a fault
would be dropped: the command would finish with status 0 (the model-load SIGINT tests failed in a
full run that way, and passed when rerun from a terminal).
"""

from __future__ import annotations

import errno
import importlib
import os
import signal
import sys


def at_points(specs: list[str]) -> None:
    import minilm.corpus.shards as corpus

    counts: dict[str, int] = {}
    actions = {}
    for spec in specs:
        point, nth, action = spec.split(":")
        actions[point, int(nth)] = {
            "kill": signal.SIGKILL,
            "stop": signal.SIGSTOP,
            "term": signal.SIGTERM,
            "int": signal.SIGINT,
        }[action]

    def reached(point: str) -> None:
        counts[point] = counts.get(point, 0) + 1
        if (sig := actions.get((point, counts[point]))) is not None:
            os.kill(os.getpid(), sig)

    corpus._reached = reached


def signal_in(spec: str) -> None:
    target, name = spec.rsplit(":", 1)
    module_name, function = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    original = getattr(module, function)

    def wrapper(*args, **kwargs):
        os.kill(os.getpid(), getattr(signal, name))
        return original(*args, **kwargs)

    setattr(module, function, wrapper)


def refuse_writes(spec: str) -> None:
    folder, name = spec.rsplit(":", 1)
    folder, code = os.path.realpath(folder), getattr(errno, name)

    def hook(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            writing = (args[1] is not None and any(c in args[1] for c in "wax+")) or (
                isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove"):
            writing = True
        else:
            return
        path = os.path.realpath(os.fsdecode(args[0]))
        if writing and (path == folder or path.startswith(folder + os.sep)):
            raise OSError(code, os.strerror(code), path)

    sys.addaudithook(hook)


def entry_point(module: str):
    """The main(argv) that `python -m module` runs: the module's own, or its package's __main__ (minilm.weights)."""
    loaded = importlib.import_module(module)
    return loaded.main if hasattr(loaded, "main") else importlib.import_module(f"{module}.__main__").main


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # see the module docstring
    split = argv.index("--")
    options, (module, *args) = argv[:split], argv[split + 1 :]
    pairs = list(zip(options[::2], options[1::2]))
    if points := [value for flag, value in pairs if flag == "--at"]:
        at_points(points)
    for flag, value in pairs:
        if flag != "--at":
            {"--signal-in": signal_in, "--refuse-writes": refuse_writes}[flag](value)
    return entry_point(module)(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
