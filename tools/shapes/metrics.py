"""Read back from the pixels what a shapes-world image shows, and score it against what was asked.

The embedded model's accuracy, and the tests that check it follows prompts, must not depend on a learnt judge, so
everything here is plain measurement: background = median of the border ring, snapped to the nearest palette
colour; foreground = the largest connected region of pixels nearer the object's colour than the background's;
size = the region's bounding-box side; position = the box centre against the anchors of that size; shape = the
best overlap (IoU) among the four shapes drawn into the same box. On the dataset's own images every attribute is
read back correctly (the tests check this), so a miss on a generated image is the model's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tools.shapes import dataset as world

ATTRIBUTES: tuple[str, ...] = ("background", "foreground", "shape", "size", "position")
BORDER = 2  # px (at 64) of the outer ring read as background
MIN_CONTRAST = 40.0  # RGB distance a pixel must differ from the background to seed the object


@dataclass(frozen=True)
class Reading:
    """What an image was measured to show; ``found`` is False when no object stands out from the background."""

    background: str
    foreground: str | None = None
    shape: str | None = None
    size: str | None = None
    position: str | None = None
    found: bool = False
    box: tuple[float, float, float, float] | None = None  # (left, top, right, bottom) px at the image's size
    shape_scores: dict[str, float] = field(default_factory=dict)

    def matches(self, spec: world.ShapeSpec) -> dict[str, bool]:
        """Attribute -> whether it is what ``spec`` asked for."""
        return {
            "background": self.background == spec.background,
            "foreground": self.foreground == spec.colour,
            "shape": self.shape == spec.shape,
            "size": self.size == spec.size,
            "position": self.position == spec.position,
        }


def nearest_colour(rgb: Sequence[float]) -> str:
    """The palette name nearest (Euclidean RGB) to a colour."""
    names = world.COLOURS
    table = np.asarray([world.PALETTE[n] for n in names], dtype=np.float32)
    distances = np.linalg.norm(table - np.asarray(rgb, dtype=np.float32)[None, :], axis=1)
    return names[int(np.argmin(distances))]


def _as_array(image) -> np.ndarray:
    array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if array.dtype != np.uint8:
        array = np.clip(array * 255.0 if array.max() <= 1.0 else array, 0, 255)
    return array.astype(np.float32)[..., :3]


def _largest_region(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = ndimage.sum(mask, labels, index=np.arange(1, count + 1))
    return labels == (1 + int(np.argmax(sizes)))


def _column(center: float, side: float, extent: int, names: tuple[str, str, str]) -> str:
    anchors = [world.anchor(name, side, extent) for name in names]
    return names[int(np.argmin([abs(center - a) for a in anchors]))]


def measure(image) -> Reading:
    """Measure a shapes-world image (PIL image or HxWx3 array, any square size)."""
    pixels = _as_array(image)
    height, width = pixels.shape[:2]
    ring = max(1, round(BORDER * width / world.IMAGE_SIZE))
    border = np.concatenate([pixels[:ring].reshape(-1, 3), pixels[-ring:].reshape(-1, 3),
                             pixels[:, :ring].reshape(-1, 3), pixels[:, -ring:].reshape(-1, 3)])
    background_rgb = np.median(border, axis=0)
    background = nearest_colour(background_rgb)
    distance = np.linalg.norm(pixels - background_rgb, axis=2)
    seed = distance > MIN_CONTRAST
    if seed.sum() < max(4, width * height // 2000):
        return Reading(background=background)
    seed = _largest_region(seed)
    # The object's colour from its most distinct pixels (away from antialiased edges), then the object is every
    # pixel more than halfway from the background towards that colour: the same 50 % coverage a drawn edge has.
    core = distance >= np.quantile(distance[seed], 0.5)
    object_rgb = np.median(pixels[core & seed], axis=0)
    axis = object_rgb - background_rgb
    coverage = (pixels - background_rgb) @ axis / max(float(axis @ axis), 1e-6)
    region = _largest_region(coverage > 0.5)
    if region.sum() == 0:
        return Reading(background=background)
    foreground = nearest_colour(np.median(pixels[region & core], axis=0) if (region & core).any() else object_rgb)
    rows, cols = np.nonzero(region)
    box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
    side = max(box[2] - box[0], box[3] - box[1])
    scale = width / world.IMAGE_SIZE
    small_high, large_low = world.SIZE_RANGES["small"][1], world.SIZE_RANGES["large"][0]
    size = "small" if side < (small_high + large_low) / 2 * scale else "large"
    nominal = sum(world.SIZE_RANGES[size]) / 2 * scale
    column = _column((box[0] + box[2]) / 2, nominal, width, ("left", "centre", "right"))
    row = _column((box[1] + box[3]) / 2, nominal, height, ("top", "middle", "bottom"))
    scores = _shape_scores(region, box, width)
    shape = max(scores, key=scores.get)
    return Reading(background=background, foreground=foreground, shape=shape, size=size,
                   position=f"{row} {column}", found=True, box=box, shape_scores=scores)


def _shape_scores(region: np.ndarray, box: tuple[float, float, float, float], size: int) -> dict[str, float]:
    """IoU of the measured region with each shape drawn into the region's bounding box."""
    scores = {}
    for shape in world.SHAPES:
        template = world.draw_mask(shape, box, image_size=size) > 0.5
        union = np.logical_or(template, region).sum()
        scores[shape] = float(np.logical_and(template, region).sum() / union) if union else 0.0
    return scores


def score(image, spec: world.ShapeSpec) -> dict[str, bool]:
    """Attribute -> whether the image shows what ``spec`` asked (plus "all": every attribute right)."""
    result = measure(image).matches(spec)
    result["all"] = all(result.values())
    return result


def score_named(image, spec: world.ShapeSpec, named: Sequence[str]) -> dict[str, bool]:
    """Like ``score``, but only the attributes a prompt named (foreground and shape always are): a background the
    prompt left to the model is not wrong whatever it is. "all" is every named attribute right."""
    matches = measure(image).matches(spec)
    scored = {"foreground", "shape"} | {_ATTRIBUTE_OF[n] for n in named}
    result = {name: ok for name, ok in matches.items() if name in scored}
    result["all"] = all(result.values())
    return result


_ATTRIBUTE_OF = {"shape": "shape", "colour": "foreground", "background": "background", "size": "size",
                 "position": "position"}  # the dataset's attribute names -> the metric's


@dataclass
class Tally:
    """Running accuracy per attribute; an attribute is counted only over the images it was scored on."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*ATTRIBUTES, "all"), 0))
    total: int = 0
    scored: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*ATTRIBUTES, "all"), 0))

    def add(self, result: dict[str, bool]) -> None:
        self.total += 1
        for name in self.counts:
            if name in result:
                self.scored[name] += 1
                self.counts[name] += int(bool(result[name]))

    def accuracy(self) -> dict[str, float]:
        """Attribute -> share right, over the images that scored it (0.0 before any image)."""
        return {name: count / self.scored[name] if self.scored[name] else 0.0 for name, count in self.counts.items()}

    def is_scored(self, name: str) -> bool:
        return self.scored.get(name, 0) > 0


def tally(images: Iterable, specs: Iterable[world.ShapeSpec]) -> Tally:
    """Score many images against their specs."""
    result = Tally()
    for image, spec in zip(images, specs, strict=True):
        result.add(score(image, spec))
    return result


def shape_readings(images: Iterable, specs: Iterable[world.ShapeSpec]) -> dict[tuple[str, str], dict[str, int]]:
    """(asked size, asked shape) -> how often the checker read each shape (plus "none" where it found no object):
    where the shape figure is lost (the first retrained model drew small stars as blobs read as circles)."""
    readings: dict[tuple[str, str], dict[str, int]] = {
        (size, shape): dict.fromkeys((*world.SHAPES, "none"), 0) for size in world.SIZES for shape in world.SHAPES}
    for image, spec in zip(images, specs, strict=True):
        reading = measure(image)
        readings[(spec.size, spec.shape)][reading.shape if reading.found else "none"] += 1
    return readings


def readings_table(readings: dict[tuple[str, str], dict[str, int]]) -> str:
    """A markdown table of ``shape_readings``: one row per asked size and shape."""
    lines = ["| asked | images | right | " + " | ".join(f"read as {s}" for s in (*world.SHAPES, "none")) + " |",
             "|---|---:|---:|" + "---:|" * (len(world.SHAPES) + 1)]
    for (size, shape), counts in readings.items():
        total = sum(counts.values())
        right = f"{100 * counts[shape] / total:.1f} %" if total else "—"
        cells = " | ".join(str(counts[s]) for s in (*world.SHAPES, "none"))
        lines.append(f"| {size} {shape} | {total} | {right} | {cells} |")
    return "\n".join(lines)


def markdown_table(rows: dict[str, Tally], all_label: str = "all five") -> str:
    """A markdown table: one row per named run, one column per attribute (percent), plus the image count."""
    header = f"| | background | foreground | shape | size | position | {all_label} | images |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, counts in rows.items():
        acc = counts.accuracy()
        cells = " | ".join(f"{100 * acc[a]:.1f} %" if counts.is_scored(a) else "—" for a in (*ATTRIBUTES, "all"))
        lines.append(f"| {name} | {cells} | {counts.total} |")
    return "\n".join(lines)


def generate(pipe, cases: Sequence[tuple[world.ShapeSpec, int]], *, steps: int, guidance: float,
             batch_size: int = 16, size: int = world.IMAGE_SIZE, sampler: str | None = None,
             form: world.PromptForm | None = None) -> list:
    """Images (PIL) for (spec, seed) cases with a txt2img pipeline; each image from its own seeded generator.

    ``sampler`` is an A1111 sampler name ("Euler", "DPM++ 2M" ...) resolved as the app resolves it, on the
    pipeline's own scheduler config; None keeps the pipeline's scheduler. ``form`` writes the prompts (None: the
    full caption).
    """
    import torch

    if sampler is not None:
        from modules.image.samplers import make_scheduler, resolve_sampler

        pipe.scheduler = make_scheduler(resolve_sampler(sampler), dict(pipe.scheduler.config))
    images = []
    for start in range(0, len(cases), batch_size):
        chunk = cases[start : start + batch_size]
        generators = [torch.Generator("cpu").manual_seed(seed) for _, seed in chunk]
        prompts = [form.caption(spec) if form else spec.caption() for spec, _ in chunk]
        output = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance,
                      generator=generators, height=size, width=size, output_type="pil")
        images += output.images
    return images


def evaluate(pipe, count: int, *, steps: int, guidance: float, sampler: str | None = None,
             batch_size: int = 16, seed: int = 1234, rows: int = 3, split: str = "heldout") -> tuple[Tally, list]:
    """Generate ``count`` prompts with fixed seeds and score them; returns the tally and the images.

    ``split`` "heldout" prompts combinations training never drew (the reported accuracy); "validation" prompts
    training combinations (for choosing settings without looking at the held-out split).
    """
    make_cases = world.evaluation_cases if split == "heldout" else world.validation_cases
    cases = make_cases(count, seed, rows)
    images = generate(pipe, cases, steps=steps, guidance=guidance, batch_size=batch_size, sampler=sampler)
    return tally(images, [spec for spec, _ in cases]), images


# What the issue asks of every prompt form (percent): at the card's default CFG, and at A1111's usual CFG 7, where
# only the colours have a target. An attribute a form does not name has no target.
DEFAULT_TARGETS: dict[str, float] = {"background": 99.0, "foreground": 98.0, "shape": 93.0, "size": 97.0,
                                     "position": 97.0}
HIGH_CFG = 7.0
HIGH_CFG_TARGETS: dict[str, float] = {"background": 97.0, "foreground": 97.0}


@dataclass(frozen=True)
class FormResult:
    """One prompt form at one guidance scale: its tally and the targets it is held to."""

    form: world.PromptForm
    guidance: float
    tally: Tally
    targets: dict[str, float]

    def failures(self) -> list[str]:
        """The scored attributes below their target."""
        acc = self.tally.accuracy()
        return [a for a, target in self.targets.items() if self.tally.is_scored(a) and 100 * acc[a] < target - 1e-9]


def evaluate_form(pipe, form: world.PromptForm, count: int, *, steps: int, guidance: float,
                  sampler: str | None = None, batch_size: int = 16, seed: int = 1234, rows: int = 3,
                  split: str = "heldout") -> tuple[Tally, list]:
    """``count`` prompts of one form (combinations held out for it), scored on what the form names."""
    cases = world.form_cases(form, count, seed, rows, split)
    images = generate(pipe, cases, steps=steps, guidance=guidance, batch_size=batch_size, sampler=sampler,
                      form=form)
    result = Tally()
    for image, (spec, _) in zip(images, cases, strict=True):
        result.add(score_named(image, spec, form.named))
    return result, images


def evaluate_forms(pipe, forms: Sequence[world.PromptForm], count: int, *, steps: int, guidances: Sequence[float],
                   default_guidance: float, sampler: str | None = None, batch_size: int = 16, seed: int = 1234,
                   rows: int = 3, report: Callable[[FormResult, float], None] | None = None,
                   ) -> tuple[list[FormResult], list]:
    """Every form at every guidance scale, each held to ``targets_for``; returns the results and the first run's
    images. ``report(result, seconds_per_image)`` is called after each (form, CFG) for progress output."""
    import time

    results, first_images = [], None
    for form in forms:
        for guidance in guidances:
            started = time.perf_counter()
            tally, images = evaluate_form(pipe, form, count, steps=steps, guidance=guidance, sampler=sampler,
                                          batch_size=batch_size, seed=seed, rows=rows)
            result = FormResult(form, guidance, tally, targets_for(guidance, default_guidance))
            results.append(result)
            first_images = first_images or images
            if report is not None:
                report(result, (time.perf_counter() - started) / max(1, count))
    return results, first_images or []


def targets_for(guidance: float, default_guidance: float) -> dict[str, float]:
    """The issue's targets at a guidance scale: the full set at the card's default, colours only at CFG 7."""
    if abs(guidance - default_guidance) < 1e-9:
        return dict(DEFAULT_TARGETS)
    return dict(HIGH_CFG_TARGETS) if abs(guidance - HIGH_CFG) < 1e-9 else {}


def forms_table(results: Sequence[FormResult], sampler: str, steps: int) -> str:
    """A markdown table, one row per (form, CFG): each scored attribute in percent, marked against its target
    (✓ / ✗), "—" where the form does not name it; pasteable into the model card as it is."""
    def target_text(targets: dict[str, float]) -> str:
        return ", ".join(f"{a} ≥ {t:g}" for a, t in targets.items()) or "none"

    by_guidance = {r.guidance: r.targets for r in results}
    lines = [f"{sampler}, {steps} steps; targets: " + "; ".join(
        f"CFG {g:g}: {target_text(t)}" for g, t in by_guidance.items()) + ".", "",
        "| prompt form | example | CFG | background | foreground | shape | size | position | all named | images "
        "| targets |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    example = world.ShapeSpec("circle", "red", "blue", "small", "middle left")
    for result in results:
        acc = result.tally.accuracy()
        cells = []
        for attribute in (*ATTRIBUTES, "all"):
            if not result.tally.is_scored(attribute):
                cells.append("—")
                continue
            mark = ""
            if attribute in result.targets:
                mark = " ✗" if attribute in result.failures() else " ✓"
            cells.append(f"{100 * acc[attribute]:.1f} %{mark}")
        spec = dataclasses.replace(example, position="middle centre") if result.form.centre_only else example
        verdict = "met" if not result.failures() else "missed: " + ", ".join(result.failures())
        lines.append(f"| {result.form.name} | {result.form.caption(spec)} | {result.guidance:g} | "
                     f"{' | '.join(cells)} | {result.tally.total} | {verdict if result.targets else '—'} |")
    return "\n".join(lines)
