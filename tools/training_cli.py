"""The command-line options every embedded-model trainer shares (seed, threads, resume, presets, --set, time cap),
so the trainers in tools/ read alike and a new option lands in all of them."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterable
from pathlib import Path


def card_command(module: str, arguments: Iterable[str]) -> str:
    """The command a model card prints to reproduce a run: shell-quoted, so a ``--set`` value with brackets,
    quotes or spaces pastes back as the one argument it was; ``--resume`` is left out (it changes nothing)."""
    return shlex.join(["python", "-m", module, *(a for a in arguments if a != "--resume")])


def reproduce_command(command: str, steps: int) -> str:
    """``command`` with its time cap replaced by the steps it reached (what gives the same weights anywhere)."""
    words, kept, skip = shlex.split(command), [], False
    for word in words:
        if skip:
            skip = False
            continue
        if word in ("--max-minutes", "--steps"):
            skip = True
            continue
        if word.startswith(("--max-minutes=", "--steps=")):
            continue
        kept.append(word)
    return shlex.join([*kept, "--steps", str(steps)])


def trainer_parser(prog: str, description: str, out_help: str, presets: Iterable[str], *, steps_help: str,
                   checkpoint_every: int, set_example: str, max_minutes_help: str) -> argparse.ArgumentParser:
    """A parser with ``--out --steps --seed --threads --resume --checkpoint-every --preset --set --keep-state
    --full-precision --quiet --max-minutes``; the trainer adds its own options (``--base`` ...) to it."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--out", type=Path, required=True, help=out_help)
    parser.add_argument("--steps", type=int, help=steps_help)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (results depend on it: keep it fixed)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/.train-state")
    parser.add_argument("--checkpoint-every", type=int, default=checkpoint_every,
                        help="steps between checkpoints (0: none)")
    parser.add_argument("--preset", choices=sorted(presets), default="default")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help=f"override a recipe setting, e.g. {set_example}")
    parser.add_argument("--keep-state", action="store_true", help="keep .train-state after saving")
    parser.add_argument("--full-precision", action="store_true", help="save float32 weights")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--max-minutes", type=float, help=max_minutes_help)
    return parser


BASE_HELP = "the base model folder (diffusers)"
MAX_MINUTES_HELP = ("stop after this much wall time and save (the card then gives the --steps that reproduce the "
                    "weights)")
