"""What an upscale job gives back: each upscaled image with where it came from and how it was made."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from modules.jobs.artifacts import Artifact


@dataclass(frozen=True, eq=False)
class UpscaledImage:
    image: Image.Image
    source: str  # the input's name (file name, or "image-N")
    infotext: str  # the source's own parameters (if it had any) plus the postprocessing line
    parameters: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def artifact(self) -> Artifact:
        return Artifact(type="image", path=self.path, image=self.image, infotext=self.infotext,
                        parameters={"source": self.source, **self.parameters})


@dataclass(frozen=True, eq=False)
class UpscaleResult:
    images: list[UpscaledImage]
    interrupted: bool = False
    skipped: tuple[str, ...] = ()  # inputs in a folder that could not be read, with why

    @property
    def artifacts(self) -> list[Artifact]:
        return [item.artifact() for item in self.images]

    @property
    def counted_images(self) -> int:
        return len(self.images)
