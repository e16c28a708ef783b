"""The interrogate kind's request: an image and which interrogator to ask, checked once before it is queued."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from PIL import Image

from modules.errors import RequestError, check_range

# A1111's API names: "clip" is a caption plus the CLIP-ranked terms. "blip" is the caption alone (the sentence
# A1111's clip interrogator starts from). A1111's "deepdanbooru" (anime tags) is not part of Sfumato.
INTERROGATORS = ("clip", "blip")


@dataclass(frozen=True, eq=False)
class InterrogateRequest:
    """Describe ``image`` in words. ``captioner`` and ``clip_model`` name folders (see ``folders``); left None, the
    first installed ones are chosen at submission, so the stored job says which models answered."""

    image: Image.Image | None = None
    model: str = "clip"
    captioner: str | None = None
    clip_model: str | None = None
    max_tokens: int = 48  # the caption's length limit, in the captioner's tokens (A1111's default maximum)

    def replace(self, **changes: Any) -> InterrogateRequest:
        return dataclasses.replace(self, **changes)

    @property
    def ranks_terms(self) -> bool:
        return self.model == "clip"


def validate_fields(request: InterrogateRequest) -> None:
    """The checks that need nothing but the request; the model folders are checked by the kind."""
    if request.image is None:
        raise RequestError("image", "give an image to interrogate")
    if request.model not in INTERROGATORS:
        raise RequestError("model", f"unknown interrogator {request.model!r}; this studio has: "
                                    f"{', '.join(INTERROGATORS)}")
    check_range("max_tokens", request.max_tokens, 1, 256)
    width, height = request.image.size
    if width < 1 or height < 1:
        raise RequestError("image", "the image is empty")
