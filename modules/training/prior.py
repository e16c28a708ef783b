"""Class images for prior preservation, made by the base model itself through the studio's generation function
and kept in a folder keyed by model and class prompt, so the next run on the same class reuses them.

A class prompt may hold several prompts, one per line: the class images cycle through them, each captioned with
its own prompt. A class the base model knows by several names (its four shapes, several dog breeds) is kept by
naming them all rather than by one word the model may never have been taught."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from modules.image.request import GenerationRequest


def class_folder(root: Path, model_hash: str, class_prompt: str, resolution: int, steps: int) -> Path:
    key = hashlib.sha256(f"{model_hash}\n{class_prompt}\n{resolution}\n{steps}".encode()).hexdigest()[:16]
    return root / key


def class_prompts(class_prompt: str) -> list[str]:
    """The prompts of a class prompt: its non-empty lines, stripped."""
    return [line.strip() for line in class_prompt.splitlines() if line.strip()]


def own_class_images(folder: Path, class_prompt: str) -> list[tuple[Image.Image, str]]:
    """The user's own class pictures (``class_data_dir``), by name, each with its ``<stem>.txt`` caption or else the
    class prompt (its lines in turn). A picture that cannot be read, or one without a caption when there is no class
    prompt, is a ``RequestError`` naming it."""
    from modules.errors import RequestError
    from modules.training.data import read_examples

    prompts = class_prompts(class_prompt)
    pairs = []
    for index, example in enumerate(read_examples((), (), folder, "", field="class_data_dir")):
        caption = example.caption or (prompts[index % len(prompts)] if prompts else "")
        if not caption:
            raise RequestError("class_prompt", f"{example.name} in the class image folder has no caption "
                                               f"({Path(example.name).stem}.txt); give a class prompt for it")
        pairs.append((example.image, caption))
    return pairs


def class_images(folder: Path, count: int, model: str, class_prompt: str, resolution: int, steps: int, seed: int,
                 generate: Callable[[GenerationRequest], list[Image.Image]],
                 on_progress: Callable[[int, int], None] = lambda _done, _count: None,
                 ) -> list[tuple[Image.Image, str]]:
    """``count`` (picture, prompt) pairs of the class: those already in ``folder`` first, the missing ones generated
    (picture ``index`` from prompt ``index`` modulo the number of prompts, seed + index, so a cache filled by two runs
    holds the same pictures) and saved there."""
    prompts = class_prompts(class_prompt)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompt.txt").write_text(f"{model}\n{class_prompt}\n", encoding="utf-8")
    images = []
    for index in range(count):
        prompt = prompts[index % len(prompts)]
        path = folder / f"{index:05d}.png"
        if path.is_file():
            with Image.open(path) as opened:
                images.append((opened.convert("RGB"), prompt))
            continue
        request = GenerationRequest(prompt=prompt, model=model, width=resolution, height=resolution,
                                    steps=steps, seed=seed + index, save_images=False, make_grid=False)
        made = generate(request)
        if not made:  # interrupted
            break
        image = made[0].convert("RGB")
        from modules.runtime.files import atomic_write

        with atomic_write(path, "wb") as file:
            image.save(file, format="PNG")
        images.append((image, prompt))
        on_progress(index + 1, count)
    return images
