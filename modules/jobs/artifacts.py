"""What a job gives back, whatever its kind: a list of typed artifacts, each with what made it.

History, the Queue tab, the gallery, webhooks, the native API's downloads and quotas read these, so a new kind of
work (upscale, video, audio, a trained model) shows up everywhere by producing artifacts, without any of them
knowing the kind.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from PIL import Image

ArtifactType = Literal["image", "video", "audio", "file"]
ARTIFACT_TYPES: tuple[str, ...] = ("image", "video", "audio", "file")


@dataclass(frozen=True, eq=False)
class Artifact:
    """One output file. ``path`` is where it lives (the outputs folder, or the job's own folder when the user did
    not ask to save); ``image`` holds decoded pixels for image artifacts so front ends need not reread the file;
    ``parameters`` is the record of what made it (seed, prompt, scale ...), ``infotext`` the A1111 text of an
    image. ``grid`` marks a contact sheet of the other images rather than an output of its own."""

    type: ArtifactType
    path: Path | None = None
    image: Image.Image | None = None
    infotext: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    grid: bool = False

    @property
    def media_type(self) -> str:
        if self.path is not None:
            guessed = mimetypes.guess_type(self.path.name)[0]
            if guessed:
                return guessed
        return "image/png" if self.type == "image" else "application/octet-stream"

    @property
    def filename(self) -> str:
        return self.path.name if self.path is not None else f"{self.type}.png"


class JobResult(Protocol):
    """What every kind's result offers the queue and the front ends that do not know the kind."""

    @property
    def artifacts(self) -> list[Artifact]: ...

    @property
    def interrupted(self) -> bool: ...

    @property
    def counted_images(self) -> int:
        """How many images count against a monthly image quota (a grid or an upscale of one image is one)."""
        ...
