"""Attention syntax: the same weights A1111 gives, for well-formed and sloppy prompts alike."""

from __future__ import annotations

import pytest

from modules.image.prompt_parser import BREAK, is_break, parse_prompt_attention


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # A1111's own doctests (modules/prompt_parser.py)
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),
    ],
)
def test_a1111_doctests(text, expected):
    assert parse_prompt_attention(text) == expected


def test_basic_weights():
    assert parse_prompt_attention("(word)") == [("word", 1.1)]
    assert parse_prompt_attention("[word]") == [("word", 1 / 1.1)]
    assert parse_prompt_attention("(word:1.3)") == [("word", 1.3)]
    assert parse_prompt_attention("(word: 0.5 )") == [("word", 0.5)]
    assert parse_prompt_attention("(word:-1)") == [("word", -1.0)]
    assert parse_prompt_attention("((word))") == [("word", 1.1 * 1.1)]
    assert parse_prompt_attention("[[word]]") == [("word", 1 / 1.1 / 1.1)]
    assert parse_prompt_attention("([word])") == [("word", 1 / 1.1 * 1.1)]


def test_nesting_multiplies():
    assert parse_prompt_attention("(a (b:2) c:1.5)") == [("a ", 1.5), ("b", 3.0), (" c", 1.5)]


def test_escapes():
    assert parse_prompt_attention("\\(a\\) \\[b\\]") == [("(a) [b]", 1.0)]
    assert parse_prompt_attention("\\\\") == [("\\", 1.0)]
    assert parse_prompt_attention("(\\(x\\))") == [("(x)", 1.1)]
    assert parse_prompt_attention("a\\b") == [("ab", 1.0)]  # A1111 drops a backslash that escapes nothing


def test_unbalanced_and_stray_brackets():
    assert parse_prompt_attention("a) b") == [("a) b", 1.0)]
    assert parse_prompt_attention("a] b") == [("a] b", 1.0)]
    assert parse_prompt_attention("[unclosed") == [("unclosed", 1 / 1.1)]
    assert parse_prompt_attention("(a]") == [("a]", 1.1)]
    assert parse_prompt_attention("[a)") == [("a)", 1 / 1.1)]
    assert parse_prompt_attention("word:1.2)") == [("word:1.2)", 1.0)]
    assert parse_prompt_attention("a: b") == [("a: b", 1.0)]
    assert parse_prompt_attention("(a:b)") == [("a:b", 1.1)]
    assert parse_prompt_attention("(a [b) c]") == [("a ", 1.1), ("b", 1.0), (" c", 1 / 1.1)]


def test_empty():
    assert parse_prompt_attention("") == [("", 1.0)]
    assert parse_prompt_attention("()") == [("", 1.0)]


def test_break():
    assert parse_prompt_attention("a cat BREAK a dog") == [("a cat", 1.0), BREAK, ("a dog", 1.0)]
    assert parse_prompt_attention("a\nBREAK\nb") == [("a", 1.0), BREAK, ("b", 1.0)]
    assert parse_prompt_attention("BREAK a") == [BREAK, ("a", 1.0)]
    assert parse_prompt_attention("a BREAK BREAK b") == [("a", 1.0), BREAK, BREAK, ("b", 1.0)]
    assert parse_prompt_attention("(a BREAK b:1.2)") == [("a", 1.2), BREAK, ("b", 1.2)]
    assert parse_prompt_attention("BREAKFAST break BREAKs") == [("BREAKFAST break BREAKs", 1.0)]
    assert BREAK == ("BREAK", -1)
    assert is_break(BREAK) and not is_break(("BREAK", 1.0))


def test_equal_neighbours_merge():
    assert parse_prompt_attention("(a)(b) c") == [("ab", 1.1), (" c", 1.0)]
    assert parse_prompt_attention("a:b:c") == [("a:b:c", 1.0)]
