"""A1111's extra-network prompt syntax: ``<lora:name:weight>`` written in the prompt or the negative prompt.

The prompt stays the one place a LoRA is asked for (as in A1111, so styles, pasted infotexts and the X/Y/Z "Prompt
S/R" axis can add or re-weigh one); this module reads the tags out of the final prompts into typed ``LoraUse``
values and gives back the prompts without them, which is what the text encoder sees. It is pure text work, used
both by the submit-time check (an unknown name is refused before anything is queued) and by the runner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modules.errors import RequestError

# A1111's ``re_extra_net``: ``<type:arguments>``; arguments are split on ``:``.
_TAG = re.compile(r"<(\w+):([^>]+)>")
LORA_TYPES = ("lora", "lyco")  # LyCORIS tags name LoRA files too in A1111 >= 1.5


@dataclass(frozen=True)
class LoraUse:
    """One LoRA asked for by a request: its name (file stem or alias) and strengths for the text encoder(s) and
    the UNet (``<lora:name:w>`` sets both; ``<lora:name:te:unet>`` or ``te=``/``unet=`` set them apart)."""

    name: str
    te_weight: float = 1.0
    unet_weight: float = 1.0


def _weight(text: str, field: str, tag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise RequestError(field, f"{tag}: {text!r} is not a number (write <lora:name:0.8>)") from None


def _parse_tag(arguments: str, field: str, tag: str) -> LoraUse:
    parts = [part.strip() for part in arguments.split(":")]
    name, positional, named = parts[0], [], {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            named[key.strip()] = value.strip()
        else:
            positional.append(part)
    if not name:
        raise RequestError(field, f"{tag} names no LoRA")
    te = _weight(named.get("te", positional[0] if positional else "1"), field, tag)
    unet = _weight(named.get("unet", positional[1] if len(positional) > 1 else str(te)), field, tag)
    return LoraUse(name, te, unet)


def split_loras(text: str, field: str = "prompt") -> tuple[str, list[LoraUse]]:
    """The text without its LoRA tags, and the LoRAs in order of writing. Tags of other extra-network types
    (hypernetworks) are refused by name rather than silently fed to the text encoder as words."""
    found: list[LoraUse] = []

    def take(match: re.Match) -> str:
        kind = match.group(1).lower()
        if kind not in LORA_TYPES:
            raise RequestError(field, f"{match.group(0)}: extra networks of type {match.group(1)!r} are not "
                                      f"supported; use <lora:name:weight>")
        found.append(_parse_tag(match.group(2), field, match.group(0)))
        return ""

    return _TAG.sub(take, text), found


def strip_extra_networks(text: str) -> str:
    """The text without any ``<type:...>`` tag: what the text encoder reads, for counting tokens as A1111 does."""
    return _TAG.sub("", text)


def extract_loras(prompt: str, negative_prompt: str) -> tuple[str, str, tuple[LoraUse, ...]]:
    """Both prompts without their tags, and the LoRAs of both (A1111 activates tags of the negative prompt too).
    A LoRA named twice is applied once with the weights added, as applying it twice would."""
    prompt, positive = split_loras(prompt, "prompt")
    negative_prompt, negative = split_loras(negative_prompt, "negative_prompt")
    merged: dict[str, LoraUse] = {}
    for use in positive + negative:
        before = merged.get(use.name)
        merged[use.name] = use if before is None else LoraUse(use.name, before.te_weight + use.te_weight,
                                                               before.unet_weight + use.unet_weight)
    return prompt, negative_prompt, tuple(merged.values())
