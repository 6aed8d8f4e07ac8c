"""python -m minilm.weights: list the known checkpoints, verify one's pinned hashes, download one.

    python -m minilm.weights list                 # known checkpoints and where each resolves
    python -m minilm.weights verify [NAME|PATH]   # one line per pinned file: ok, or what differs
    python -m minilm.weights download NAME        # fetch from the hub into the local weights, verified

An entry point of its own (not in minilm/weights/__init__.py), so that `import minilm` never
imports the module that `python -m` runs as __main__.
"""

from __future__ import annotations

import argparse
import sys

from ..cli import ArgumentParser, run
from .download import download_checkpoint
from .errors import WeightsError
from .known import DEFAULT_CHECKPOINT, KNOWN_CHECKPOINTS
from .resolve import (
    find_in_hf_cache,
    find_in_offline_package,
    find_in_source_tree,
    local_weights_dir,
    resolve_checkpoint,
)
from .verify import identify_checkpoint, pin_problem, verify_checkpoint


def _cmd_list(args: argparse.Namespace) -> int:
    print(f"local weights: {local_weights_dir()}  (download writes here; MINILM_WEIGHTS_DIR moves it)")
    for known in KNOWN_CHECKPOINTS.values():
        print(f"{known.name}  ({known.repo_id} at {known.revision[:12]}; {len(known.pins)} files pinned)")
        print(f"  {'pooling':22s} {known.pooling}")
        print(f"  {'prompts':22s} {known.prompts}")
        places = [("local weights", find_in_source_tree(known.name))]
        if known.offline_package:
            places.append((known.offline_package.split("==")[0], find_in_offline_package(known)))
        places.append(("Hugging Face cache", find_in_hf_cache(known.repo_id)))
        for label, folder in places:
            print(f"  {label:22s} {folder if folder else '-'}")
        try:
            print(f"  resolves to            {resolve_checkpoint(known.name).path}")
        except WeightsError:
            print(f"  resolves to            nothing; fix: {known.fix}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    """One line per pinned file, "ok" or what differs; an error line and status 2 when any differs."""
    resolved = resolve_checkpoint(args.model)
    known = identify_checkpoint(resolved)
    problems = 0
    for filename, pin in known.pins.items():
        problem = pin_problem(resolved.path / filename, pin)
        problems += problem is not None
        print(f"ok  {pin.sha256}  {resolved.path / filename}" if problem is None else f"differs  {problem}")
    if problems:
        sys.stdout.flush()
        verify_checkpoint(resolved)  # raises the one-line error that names them all
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    print(download_checkpoint(args.name, force=args.force))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m minilm.weights", description="Find, verify and download checkpoints.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="known checkpoints and where each one resolves").set_defaults(run=_cmd_list)
    verify = sub.add_parser("verify", help="re-check the pinned sha256 hashes")
    verify.add_argument("model", nargs="?", default=None, help=f"name or folder (default {DEFAULT_CHECKPOINT})")
    verify.set_defaults(run=_cmd_verify)
    download = sub.add_parser(
        "download", help="fetch from the Hugging Face hub into the local weights folder (see list), verified"
    )
    download.add_argument("name")
    download.add_argument("--force", action="store_true", help="replace an existing copy there")
    download.set_defaults(run=_cmd_download)
    args = parser.parse_args(argv)
    return run(lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
