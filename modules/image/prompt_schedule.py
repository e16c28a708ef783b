"""A1111's prompt editing ``[from:to:when]``, alternation ``[a|b]`` and composable ``AND``, as per-step text.

Prompts shared on the web are written for A1111, so its semantics are the contract (``modules/prompt_parser.py``,
``get_learned_conditioning_prompt_schedules`` and ``get_multicond_prompt_list``, with A1111's default timeline):

- ``[from:to:when]``, ``[to:when]`` (nothing before), ``[from::when]`` (nothing after). ``when`` written with a
  decimal point is a fraction of the steps (``0.5``), a whole number is a step (``10``); ``1.0`` therefore means "at
  the end". In a hires-fix second pass the timeline continues: whole numbers count on from the first pass's steps,
  fractions from 1.0 (``[a:b:1.5]`` switches half-way through the second pass).
- ``[a|b|c]`` takes the next option at every step.
- A prompt is a list of (end step, text) pairs; step ``s`` (counted from 0) uses the first pair whose end is >= s.
- Anything that does not parse (an unclosed bracket, ``[a:b]`` with no number) stays literal text; a ``|`` outside an
  alternation or a trailing lone backslash makes the whole prompt literal, as A1111's grammar does.
- ``AND`` splits a prompt into sub-prompts, each may end in ``:weight``; each is scheduled on its own.

Only text is produced here; ``modules.image.prompt_conditioning`` turns it into what the UNet sees at each step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WHEN = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*\]")
_PLAIN_STOP = set("\\[]():|")
_AND = re.compile(r"\bAND\b")
_WEIGHT = re.compile(r"^(.*?)(?:\s*:\s*([+-]?(?:\d+\.?\d*|\.\d+)))?\s*$", re.S)


class _Unparsable(Exception):
    """Raised inside the parser; the caller decides whether the bracket becomes literal or the prompt does."""


@dataclass
class _Scheduled:
    before: list | None
    after: list
    when_text: str
    when: int = 0  # the end step of ``before``, set by ``_resolve_steps``


@dataclass
class _Alternate:
    options: list[list]


class _Parser:
    """Recursive descent over A1111's schedule grammar (emphasis brackets are kept verbatim for the attention
    parser that runs later on each step's text)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def sequence(self, top: bool) -> list:
        items: list = []
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\\":
                if self.pos + 1 >= len(text):
                    raise _Unparsable  # A1111's grammar has no place for a lone trailing backslash
                items.append(text[self.pos : self.pos + 2])
                self.pos += 2
            elif char in "([":
                start = self.pos
                try:
                    items.extend(self.bracket())
                except _Unparsable:
                    if not top:
                        raise
                    self.pos = start + 1
                    items.append(char)  # at the top level a bracket that does not parse is plain text
            elif char in ")]:":
                if not top:
                    return items
                items.append(char)
                self.pos += 1
            elif char == "|":
                if not top:
                    return items
                raise _Unparsable
            else:
                end = self.pos + 1
                while end < len(text) and text[end] not in _PLAIN_STOP:
                    end += 1
                items.append(text[self.pos : end])
                self.pos = end
        return items

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise _Unparsable
        self.pos += 1

    def when(self) -> str | None:
        match = _WHEN.match(self.text, self.pos)
        if match is None:
            return None
        self.pos = match.end()
        return match.group(1)

    def bracket(self) -> list:
        opening = self.peek()
        self.pos += 1
        first = self.sequence(top=False)
        if opening == "(":
            if self.peek() == ")":
                self.pos += 1
                return ["(", *first, ")"]
            self.expect(":")
            second = self.sequence(top=False)
            self.expect(")")
            return ["(", *first, ":", *second, ")"]
        following = self.peek()
        if following == "]":
            self.pos += 1
            return ["[", *first, "]"]
        if following == "|":
            options = [first]
            while self.peek() == "|":
                self.pos += 1
                options.append(self.sequence(top=False))
            self.expect("]")
            return [_Alternate(options)]
        self.expect(":")
        when = self.when()
        if when is not None:
            return [_Scheduled(None, first, when)]
        second = self.sequence(top=False)
        self.expect(":")
        when = self.when()
        if when is None:
            raise _Unparsable
        return [_Scheduled(first, second, when)]


def _nodes(items: list):
    for item in items:
        if isinstance(item, _Scheduled):
            yield item
            yield from _nodes(item.before or [])
            yield from _nodes(item.after)
        elif isinstance(item, _Alternate):
            yield item
            for option in item.options:
                yield from _nodes(option)


def _resolve_steps(items: list, steps: int, first_pass_steps: int | None) -> list[int]:
    """Turn each ``when`` into a step of this pass; return the sorted steps at which the text may change."""
    int_offset, float_offset = (first_pass_steps, 1.0) if first_pass_steps is not None else (0, 0.0)
    ends = {steps}
    for node in _nodes(items):
        if isinstance(node, _Alternate):
            ends.update(range(1, steps + 1))
            continue
        value = float(node.when_text)
        value = (value - float_offset) * steps if "." in node.when_text else value - int_offset
        node.when = min(steps, int(value))
        if node.when >= 1:
            ends.add(node.when)
    return sorted(ends)


def _render(items: list, step: int) -> str:
    parts = []
    for item in items:
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, _Scheduled):
            parts.append(_render(item.before or [], step) if step <= item.when else _render(item.after, step))
        else:
            parts.append(_render(item.options[(step - 1) % len(item.options)], step))
    return "".join(parts)


def prompt_schedule(prompt: str, steps: int, first_pass_steps: int | None = None) -> list[tuple[int, str]]:
    """The prompt's (end step, text) pairs for a pass of ``steps`` steps; ``first_pass_steps`` marks a hires pass.

    >>> prompt_schedule("a [cat:dog:0.5]", 20)
    [(10, 'a cat'), (20, 'a dog')]
    """
    try:
        parser = _Parser(prompt)
        items = parser.sequence(top=True)
    except _Unparsable:
        return [(steps, prompt)]
    if not any(isinstance(item, (_Scheduled, _Alternate)) for item in _nodes(items)):
        return [(steps, prompt)]  # nothing to schedule: the text exactly as written
    return [(end, _render(items, end)) for end in _resolve_steps(items, steps, first_pass_steps)]


def text_at(schedule: list[tuple[int, str]], step: int) -> str:
    """The text for step ``step`` (0-based): the first pair whose end step is not before it."""
    for end, text in schedule:
        if step <= end:
            return text
    return schedule[-1][1]


def split_and(prompt: str) -> list[tuple[str, float]]:
    """Sub-prompts of a composable prompt with their weights: ``"a cat AND a dog :1.2"`` ->
    ``[("a cat", 1.0), (" a dog", 1.2)]``. A prompt without ``AND`` and without a trailing weight comes back
    unchanged (so a plain prompt is encoded exactly as before)."""
    parts = _AND.split(prompt)
    result = []
    for part in parts:
        match = _WEIGHT.match(part)
        if match is not None and match.group(2) is not None:
            result.append((match.group(1), float(match.group(2))))
        else:  # A1111's weight pattern drops the blanks before AND; a lone prompt is kept as written
            result.append((part.rstrip() if len(parts) > 1 else part, 1.0))
    return result
