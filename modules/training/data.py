"""Training images: reading them (with their captions), sorting them into aspect-ratio buckets, and the fixed
order in which a run visits them.

The order of every epoch is a function of the seed and the epoch number alone, and each micro-batch's random
choices (flip, crop) come from a generator seeded by its index, so a run resumed at step N sees exactly the
batches an uninterrupted run would: nothing about the data order has to be carried in a checkpoint but N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from modules.errors import RequestError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
BUCKET_STEP = 64  # bucket sides are multiples of this (the UNet halves the latent three times)
MAX_ASPECT = 2.0


@dataclass(frozen=True, eq=False)
class Example:
    """One training image with the caption it is trained on."""

    image: Image.Image
    caption: str
    name: str


def folder_images(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir()
                  if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES and not entry.name.startswith("."))


def read_examples(images: tuple[Image.Image, ...], captions: tuple[str, ...], folder: Path | None,
                  instance_prompt: str, field: str = "data_dir") -> list[Example]:
    """The uploads, then the folder's images by name; a missing or empty caption means ``instance_prompt``.
    An image that cannot be read is a ``RequestError`` naming it (a run on fewer images than asked is not
    what the user wanted)."""
    examples = []
    for index, image in enumerate(images):
        caption = captions[index].strip() if index < len(captions) else ""
        examples.append(Example(_rgb(image), caption or instance_prompt, f"upload-{index + 1}"))
    if folder is not None:
        paths = folder_images(folder)
        if not paths:
            raise RequestError(field, f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}")
        for path in paths:
            try:
                with Image.open(path) as opened:
                    opened.load()
                    image = _rgb(ImageOps.exif_transpose(opened))
            except (OSError, UnidentifiedImageError, ValueError) as error:
                raise RequestError(field, f"{path.name} cannot be read as an image: {error}") from None
            caption_file = path.with_suffix(".txt")
            caption = ""
            if caption_file.is_file():
                caption = caption_file.read_text(encoding="utf-8", errors="replace").strip()
            examples.append(Example(image, caption or instance_prompt, path.name))
    if not examples:
        raise RequestError("images", "no training images")
    return examples


def _rgb(image: Image.Image) -> Image.Image:
    if image.width < 1 or image.height < 1:
        raise RequestError("images", "an image is empty")
    return image.convert("RGB")


def bucket_sizes(resolution: int, buckets: bool) -> list[tuple[int, int]]:
    """(width, height) pairs of at most ``resolution``² pixels and at least half that, sides multiples of 64 (or
    the square itself when the resolution is no multiple of 64), aspect ratios up to 2:1 either way."""
    if not buckets or resolution % BUCKET_STEP:
        return [(resolution, resolution)]
    area = resolution * resolution
    sizes = set()
    width = BUCKET_STEP
    while width <= resolution * MAX_ASPECT:
        # the tallest height that keeps the area and the aspect ratio; its transpose is a bucket too
        height = min(area // width, int(width * MAX_ASPECT)) // BUCKET_STEP * BUCKET_STEP
        if height >= BUCKET_STEP and width / height <= MAX_ASPECT and 2 * width * height >= area:
            sizes.update({(width, height), (height, width)})
        width += BUCKET_STEP
    return sorted(sizes)


def nearest_bucket(size: tuple[int, int], sizes: list[tuple[int, int]]) -> tuple[int, int]:
    aspect = math.log(size[0] / size[1])
    return min(sizes, key=lambda bucket: (abs(math.log(bucket[0] / bucket[1]) - aspect), -bucket[0] * bucket[1]))


def epoch_batches(buckets: list[tuple[int, int]], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch as example indices: shuffled by (seed, epoch), each batch from one bucket."""
    import numpy as np

    rng = np.random.default_rng([seed, epoch])
    order = [int(index) for index in rng.permutation(len(buckets))]
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for index in order:
        by_bucket.setdefault(buckets[index], []).append(index)
    batches = [members[start:start + batch_size] for members in by_bucket.values()
               for start in range(0, len(members), batch_size)]
    return [batches[int(i)] for i in rng.permutation(len(batches))]


def batches_per_epoch(buckets: list[tuple[int, int]], batch_size: int) -> int:
    counts: dict[tuple[int, int], int] = {}
    for bucket in buckets:
        counts[bucket] = counts.get(bucket, 0) + 1
    return sum(math.ceil(count / batch_size) for count in counts.values())


def batch_at(micro: int, buckets: list[tuple[int, int]], batch_size: int, seed: int) -> list[int]:
    """The example indices of micro-batch number ``micro`` (counted from the start of the run)."""
    per_epoch = batches_per_epoch(buckets, batch_size)
    return epoch_batches(buckets, batch_size, seed, micro // per_epoch)[micro % per_epoch]


def to_tensor(image: Image.Image, size: tuple[int, int], *, flip: bool, random_crop: bool, generator: Any) -> Any:
    """The image resized to cover ``size`` and cropped to it (centre, or at a random place), maybe mirrored,
    as a CHW tensor in [-1, 1]."""
    import numpy as np
    import torch

    width, height = size
    scale = max(width / image.width, height / image.height)
    resized = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))),
                           Image.Resampling.LANCZOS)
    spare_x, spare_y = resized.width - width, resized.height - height
    if random_crop:
        left = int(torch.randint(0, spare_x + 1, (1,), generator=generator))
        top = int(torch.randint(0, spare_y + 1, (1,), generator=generator))
    else:
        left, top = spare_x // 2, spare_y // 2
    cropped = resized.crop((left, top, left + width, top + height))
    if flip and float(torch.rand((1,), generator=generator)) < 0.5:
        cropped = cropped.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    array = np.asarray(cropped, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array.copy()).permute(2, 0, 1)
