"""What an image generation gives back: the images, the optional grid, and a typed summary of the run.

Front ends build their own answers from these fields (the A1111 router its ``info`` dict, the native API its
parameters record); the engine knows no wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from modules.jobs.artifacts import Artifact


@dataclass(frozen=True, eq=False)
class GeneratedImage:
    image: Image.Image
    seed: int
    subseed: int
    prompt: str
    negative_prompt: str
    infotext: str
    path: Path | None = None
    nsfw: bool | None = None  # the safety checker's verdict (True: filtered); None when no check ran

    def artifact(self, *, grid: bool = False) -> Artifact:
        parameters = {"seed": self.seed, "subseed": self.subseed, "prompt": self.prompt,
                      "negative_prompt": self.negative_prompt}
        if self.nsfw is not None:
            parameters["nsfw"] = self.nsfw
        return Artifact(type="image", path=self.path, image=self.image, infotext=self.infotext, grid=grid,
                        parameters=parameters)


@dataclass(frozen=True)
class GenerationSummary:
    """The settings a generation actually ran with (after styles, the model's defaults and the sampler's
    resolution), named as A1111 names them so the API routers can report them without translation."""

    prompt: str = ""
    negative_prompt: str = ""
    width: int = 0
    height: int = 0
    sampler_name: str = ""
    scheduler: str = ""
    cfg_scale: float = 0.0
    steps: int = 0
    batch_size: int = 1
    n_iter: int = 1
    subseed_strength: float = 0.0
    sd_model_name: str = ""
    sd_model_hash: str = ""
    sd_vae_name: str | None = None
    sd_vae_hash: str | None = None
    denoising_strength: float | None = None
    clip_skip: int = 1
    styles: tuple[str, ...] = ()
    job_timestamp: str = ""
    version: str = ""
    extra_generation_params: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class GenerationResult:
    """Images in order, the optional grid, and the summary of the run. ``generated_images`` counts every image
    the job made (a sweep's cells included) for quotas; it defaults to the number of images. ``extension_info``
    carries what an extension reports about the job (a plot's axes), which the API routers pass on."""

    images: list[GeneratedImage]
    grid: GeneratedImage | None = None
    summary: GenerationSummary = field(default_factory=GenerationSummary)
    interrupted: bool = False
    generated_images: int | None = None
    leading_grids: int = 0  # how many of ``images`` are grids of the others (an extension's plot), listed first
    extension_info: dict[str, dict[str, object]] = field(default_factory=dict)  # by extension name

    @property
    def seeds(self) -> list[int]:
        return [item.seed for item in self.images]

    @property
    def infotexts(self) -> list[str]:
        return [item.infotext for item in self.images]

    @property
    def filtered(self) -> list[bool]:
        """Per image, whether the safety checker flagged it (and it was blurred or blacked out)."""
        return [bool(item.nsfw) for item in self.images]

    @property
    def artifacts(self) -> list[Artifact]:
        """The grid first (as A1111 lists it), then each image."""
        head = [self.grid.artifact(grid=True)] if self.grid is not None else []
        return head + [item.artifact(grid=index < self.leading_grids) for index, item in enumerate(self.images)]

    @property
    def counted_images(self) -> int:
        return len(self.images) if self.generated_images is None else self.generated_images
