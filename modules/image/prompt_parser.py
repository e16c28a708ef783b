"""A1111's attention syntax: ``(word)``, ``[word]``, ``(word:1.3)`` and ``BREAK``.

Prompts written for A1111 must weigh the same here, or the same seed gives a different picture, so this follows
``modules/prompt_parser.py parse_prompt_attention`` rule for rule, including how it forgives unbalanced brackets
(an unclosed bracket applies to the end of the prompt; a stray closing bracket is plain text) and how it drops a
lone backslash. One deliberate difference: a ``BREAK`` inside brackets still breaks, where A1111 would turn it into
a word with a negative weight.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

Fragment = tuple[str, float]

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
BREAK_TEXT = "BREAK"
BREAK_WEIGHT = -1.0
BREAK: Fragment = (BREAK_TEXT, BREAK_WEIGHT)

_SPECIAL = "\\()[]:"
_ESCAPABLE = "()[]\\"
_WEIGHT_CLOSE = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.S)


def is_break(fragment: Fragment) -> bool:
    return fragment[0] == BREAK_TEXT and fragment[1] == BREAK_WEIGHT


def _scan(text: str) -> Iterator[tuple[str, str, float | None]]:
    """Yield (kind, text, weight): kind is "text", "open(", "open[", "close)", "close]" or "weight)"."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            following = text[i + 1 : i + 2]
            if following and following in _ESCAPABLE:
                yield "text", following, None
                i += 2
            else:  # A1111 swallows a backslash that escapes nothing
                i += 1
        elif ch in "([":
            yield "open" + ch, ch, None
            i += 1
        elif ch in ")]":
            yield "close" + ch, ch, None
            i += 1
        elif ch == ":":
            match = _WEIGHT_CLOSE.match(text, i)
            weight = _to_float(match.group(1)) if match else None
            if match and weight is not None:
                yield "weight)", match.group(0), weight
                i = match.end()
            else:
                yield "text", ":", None
                i += 1
        else:
            end = i + 1
            while end < n and text[end] not in _SPECIAL:
                end += 1
            yield "text", text[i:end], None
            i = end


def _to_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_prompt_attention(text: str) -> list[Fragment]:
    """Split a prompt into (text, weight) runs; ``BREAK`` becomes ``("BREAK", -1)``; equal neighbours are merged.

    >>> parse_prompt_attention("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    """
    fragments: list[list] = []  # [text, weight], mutable while brackets close
    round_stack: list[int] = []
    square_stack: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for item in fragments[start:]:
            if not (item[0] == BREAK_TEXT and item[1] == BREAK_WEIGHT):
                item[1] *= factor

    def add_text(run: str) -> None:
        for index, part in enumerate(_BREAK_SPLIT.split(run)):
            if index > 0:
                fragments.append(list(BREAK))
            if part:
                fragments.append([part, 1.0])

    for kind, token, weight in _scan(text):
        if kind == "open(":
            round_stack.append(len(fragments))
        elif kind == "open[":
            square_stack.append(len(fragments))
        elif kind == "weight)" and round_stack:
            multiply(round_stack.pop(), weight)
        elif kind == "close)" and round_stack:
            multiply(round_stack.pop(), ROUND_MULTIPLIER)
        elif kind == "close]" and square_stack:
            multiply(square_stack.pop(), SQUARE_MULTIPLIER)
        elif kind == "text" and len(token) == 1 and token in _ESCAPABLE:
            fragments.append([token, 1.0])  # an escaped bracket is never a BREAK boundary
        else:
            add_text(token)

    for start in round_stack:
        multiply(start, ROUND_MULTIPLIER)
    for start in square_stack:
        multiply(start, SQUARE_MULTIPLIER)

    merged: list[list] = []
    for item in fragments:
        if merged and merged[-1][1] == item[1] and not is_break(tuple(item)) and not is_break(tuple(merged[-1])):
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    if not merged:
        return [("", 1.0)]
    return [(str(item[0]), float(item[1])) for item in merged]
