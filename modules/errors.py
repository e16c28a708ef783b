"""The error every kind of request raises for bad input, so each front end can name the field that is wrong."""

from __future__ import annotations


class RequestError(ValueError):
    """A request field is invalid; ``field`` names it so HTTP and UI front ends can point at it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def check_range(name: str, value: float, low: float, high: float) -> None:
    """Refuse a number outside [low, high] (NaN included), naming the field."""
    if not (low <= value <= high):
        raise RequestError(name, f"must be between {low:g} and {high:g}, got {value:g}")
