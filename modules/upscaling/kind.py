"""The upscale kind of work: A1111 Extras' upscaling (one image, a batch, a folder) through the job queue."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from modules.errors import RequestError
from modules.image.codec import open_image, read_saved_image, write_saved_image
from modules.image.infotext import read_infotext
from modules.image.request import Limits
from modules.jobs.control import JobControl, Progress
from modules.jobs.kinds import Kind
from modules.runtime.outputs import OutputStore
from modules.upscaling.loading import UpscalerModels
from modules.upscaling.registry import UpscalerRegistry
from modules.upscaling.request import UpscaleRequest, validate_fields
from modules.upscaling.results import UpscaledImage, UpscaleResult
from modules.upscaling.sizes import output_size
from modules.upscaling.tiling import TileOptions, UpscaleInterrupted, default_tile_options

UPSCALE = "upscale"
OUTPUT_FOLDER = "extras-images"  # A1111's folder for Extras outputs
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class FolderPolicy:
    """Which folders an upscale request may read. ``roots`` None: any folder the studio's user can read (a studio
    on localhost, used by its owner); otherwise only folders inside those roots (an exposed studio: a visitor
    must not read the server's files)."""

    roots: tuple[Path, ...] | None = None

    def check(self, folder: str) -> Path:
        path = Path(folder).expanduser()
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise RequestError("input_dir", f"the folder {folder!r} does not exist") from None
        if self.roots is not None and not any(_inside(resolved, root) for root in self.roots):
            allowed = ", ".join(str(root) for root in self.roots)
            raise RequestError("input_dir", f"this studio reads folders only inside {allowed}; {folder!r} is not")
        if not resolved.is_dir():
            raise RequestError("input_dir", f"{folder!r} is not a folder")
        if not os.access(resolved, os.R_OK | os.X_OK):
            raise RequestError("input_dir", f"the folder {folder!r} cannot be read")
        return resolved


def _inside(path: Path, root: Path) -> bool:
    root = root.resolve()
    return path == root or root in path.parents


def folder_images(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, by name (not its sub-folders; hidden files skipped)."""
    return sorted(entry for entry in folder.iterdir()
                  if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES and not entry.name.startswith("."))


class UpscaleRunner:
    """Runs upscale requests on the worker thread, which owns ``models`` (the loaded upscaler networks)."""

    def __init__(self, registry: UpscalerRegistry, models: UpscalerModels, store: OutputStore, limits: Limits,
                 *, tile_defaults: TileOptions | Callable[[], TileOptions] | None = None,
                 folders: FolderPolicy = FolderPolicy()) -> None:
        self.registry = registry
        self.models = models
        self.store = store
        self.limits = limits
        self._tile_defaults = tile_defaults  # a callable asks the device on first use, not at start-up
        self.folders = folders

    @property
    def tile_defaults(self) -> TileOptions:
        """Tile size and overlap when the request leaves them out: they depend on the device's memory."""
        wanted = self._tile_defaults
        if wanted is None:
            return default_tile_options(self.models.device_type, None)
        return wanted() if callable(wanted) else wanted

    # -- before queueing -------------------------------------------------------------------------------------------
    def validate(self, request: UpscaleRequest) -> None:
        """Everything that can be known before running: fields, upscaler names, the folder, every given image's
        output size against the limits, the tile options."""
        validate_fields(request, self.limits.max_upscale_side)
        self.registry.find(request.upscaler)
        if request.upscaler_2:
            try:
                self.registry.find(request.upscaler_2)  # "None" is a built-in
            except RequestError as error:
                raise RequestError("upscaler_2", error.message) from None
        count = len(request.images)
        if request.input_dir:
            folder = self.folders.check(request.input_dir)
            found = folder_images(folder)
            if not found:
                raise RequestError("input_dir", f"no images ({', '.join(IMAGE_SUFFIXES)}) in {request.input_dir!r}")
            count += len(found)
        if count > self.limits.max_upscale_inputs:
            raise RequestError("image", f"{count} images in one job; this studio takes at most "
                                        f"{self.limits.max_upscale_inputs}")
        for image in request.images:
            self.target_size(request, image.size)
        self.tiles(request)

    def target_size(self, request: UpscaleRequest, size: tuple[int, int]) -> tuple[int, int]:
        """The upscaled size before any crop (``scale to`` covers the asked box), checked against the limits."""
        if request.resize_mode == 0:
            scale = request.scale
        else:
            scale = max(request.width / size[0], request.height / size[1])
            if not request.crop:
                scale = min(request.width / size[0], request.height / size[1])
        return output_size(size, scale=scale, max_side=self.limits.max_upscale_side,
                           max_pixels=self.limits.max_upscale_pixels)

    def tiles(self, request: UpscaleRequest) -> TileOptions:
        size = self.tile_defaults.tile_size if request.tile_size is None else request.tile_size
        overlap = self.tile_defaults.overlap if request.tile_overlap is None else request.tile_overlap
        return TileOptions(tile_size=size, overlap=overlap)

    # -- running ---------------------------------------------------------------------------------------------------
    def run(self, request: UpscaleRequest, control: JobControl) -> UpscaleResult:
        from modules.upscaling.upscale import upscale_blended

        first = self.registry.find(request.upscaler)
        second = self.registry.find(request.upscaler_2) if request.upscaler_2 else None
        tile = self.tiles(request)
        sources = list(self._sources(request))
        progress = Progress(job_count=len(sources), steps=1)
        done: list[UpscaledImage] = []
        skipped: list[str] = []
        interrupted = False
        for index, (name, load) in enumerate(sources):
            if control.interrupted.is_set():
                interrupted = True
                break
            control.skipped.clear()
            try:
                image = load()
            except RequestError as error:
                skipped.append(f"{name}: {error.message}")
                continue
            progress.job_no, progress.step, progress.text = index, 0, f"Upscaling {name}"
            control.report(progress)

            def on_progress(step: int, steps: int) -> None:
                progress.step, progress.steps = step, max(1, steps)
                control.report(progress)

            try:
                picture = upscale_blended(
                    image, first, second, request.upscaler_2_visibility, models=self.models,
                    size=self.target_size(request, image.size), tile=tile,
                    max_pixels=self.limits.max_upscale_pixels, max_side=self.limits.max_upscale_side,
                    on_progress=on_progress,
                    should_stop=lambda: control.interrupted.is_set() or control.skipped.is_set())
            except UpscaleInterrupted:
                if control.interrupted.is_set():
                    interrupted = True
                    break
                continue  # skip: on to the next image
            picture = self._fit(request, picture)
            done.append(self._finish(request, name, image, picture, first.name, second.name if second else None))
        return UpscaleResult(images=done, interrupted=interrupted, skipped=tuple(skipped))

    def _sources(self, request: UpscaleRequest) -> Iterator[tuple[str, Any]]:
        for index, image in enumerate(request.images):
            yield request.name_of(index), (lambda image=image: image)
        if request.input_dir:
            for path in folder_images(self.folders.check(request.input_dir)):
                yield path.name, (lambda path=path: _read_input(path))

    @staticmethod
    def _fit(request: UpscaleRequest, picture: Image.Image) -> Image.Image:
        """``scale to`` with crop: the centre of the covering image, exactly the asked box."""
        if request.resize_mode != 1 or not request.crop or picture.size == (request.width, request.height):
            return picture
        left = (picture.width - request.width) // 2
        top = (picture.height - request.height) // 2
        return picture.crop((left, top, left + request.width, top + request.height))

    def _finish(self, request: UpscaleRequest, name: str, source: Image.Image, picture: Image.Image,
                first: str, second: str | None) -> UpscaledImage:
        parameters: dict[str, Any] = {"Postprocess upscaler": first}
        if request.resize_mode == 0:
            parameters = {"Postprocess upscale by": _plain(request.scale), **parameters}
        else:
            parameters = {"Postprocess upscale to": f"{request.width}x{request.height}",
                          "Postprocess crop to fit": request.crop, **parameters}
        if second and request.upscaler_2_visibility > 0:
            parameters["Postprocess upscaler 2"] = second
            parameters["Postprocess upscaler 2 visibility"] = _plain(request.upscaler_2_visibility)
        line = ", ".join(f"{key}: {value}" for key, value in parameters.items())
        original = read_infotext(source)
        infotext = f"{original}, {line}" if original else line
        path = None
        if request.save_images:
            path = self.store.save_named(picture, OUTPUT_FOLDER, infotext, _stem(name), request.output_format)
        return UpscaledImage(image=picture, source=name, infotext=infotext, path=path,
                             parameters={**parameters, "Size": f"{picture.width}x{picture.height}"})


def _plain(number: float) -> float | int:
    """2.0 -> 2 and 1.5 -> 1.5, as A1111 writes numbers into the infotext."""
    rounded = round(float(number), 4)
    return int(rounded) if rounded.is_integer() else rounded


def _stem(name: str) -> str:
    from modules.runtime.outputs import prompt_slug

    return prompt_slug(Path(name).stem, limit=64)


def _read_input(path: Path) -> Image.Image:
    try:
        return open_image(path)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise RequestError("input_dir", f"{path.name} cannot be read as an image: {error}") from None


# -- the record codec -----------------------------------------------------------------------------------------------
def request_to_dict(request: UpscaleRequest, folder: Path) -> dict[str, Any]:
    data = {name: getattr(request, name) for name in _FIELDS if name not in ("images", "names")}
    data["images"] = [write_saved_image(image, folder, f"input-{index:03d}.png")
                      for index, image in enumerate(request.images)]
    data["names"] = list(request.names)
    return data


def request_from_dict(data: dict[str, Any], folder: Path, strict: bool) -> UpscaleRequest:
    values = {key: value for key, value in data.items() if key in _FIELDS and key not in ("images", "names")}
    images = [read_saved_image(name, folder, "image", strict) for name in data.get("images") or []]
    values["images"] = tuple(image for image in images if image is not None)
    values["names"] = tuple(data.get("names") or ())
    if len(values["names"]) != len(values["images"]):
        values["names"] = ()
    return UpscaleRequest(**values)


def result_to_dict(result: UpscaleResult, folder: Path) -> dict[str, Any]:
    entries = []
    for index, item in enumerate(result.images):
        file = str(Path(item.path).resolve()) if item.path is not None else write_saved_image(
            item.image, folder, f"{index:03d}-upscaled.png", infotext=item.infotext)
        entries.append({"file": file, "source": item.source, "infotext": item.infotext,
                        "parameters": item.parameters})
    return {"images": entries, "interrupted": result.interrupted, "skipped": list(result.skipped)}


def result_from_dict(data: dict[str, Any], folder: Path) -> tuple[UpscaleResult, list[str]]:
    problems: list[str] = []
    images = []
    for entry in data.get("images") or []:
        path = Path(str(entry.get("file", "")))
        path = path if path.is_absolute() else folder / path
        try:
            image = open_image(path)
        except (OSError, ValueError) as error:
            problems.append(f"{path}: {'missing' if not path.exists() else error}")
            continue
        images.append(UpscaledImage(image=image, source=str(entry.get("source", "")),
                                    infotext=str(entry.get("infotext", "")),
                                    parameters=dict(entry.get("parameters") or {}), path=path))
    return UpscaleResult(images=images, interrupted=bool(data.get("interrupted")),
                         skipped=tuple(data.get("skipped") or ())), problems


_FIELDS = tuple(field.name for field in dataclasses.fields(UpscaleRequest))


def upscale_kind(runner: UpscaleRunner) -> Kind:
    def describe(request: UpscaleRequest) -> str:
        count = len(request.images) + (1 if request.input_dir else 0)
        what = request.input_dir if request.input_dir and not request.images else (
            request.name_of(0) if count == 1 else f"{len(request.images)} images")
        size = f"x{request.scale:g}" if request.resize_mode == 0 else f"to {request.width}x{request.height}"
        return f"{what} {size} with {request.upscaler}"

    return Kind(
        name=UPSCALE,
        request_type=UpscaleRequest,
        validate=runner.validate,
        run=runner.run,
        encode_request=request_to_dict,
        decode_request=request_from_dict,
        encode_result=result_to_dict,
        decode_result=result_from_dict,
        initial_progress=lambda request: Progress(job_count=max(1, len(request.images)), steps=1),
        requested_images=lambda request: max(1, len(request.images)),
        label=lambda _request: UPSCALE,
        describe=describe,
    )
