"""The loss curve as a picture (Pillow only): what a user glances at to see whether a run is learning."""

from __future__ import annotations

from PIL import Image, ImageDraw

BACKGROUND = (255, 255, 255)
AXES = (90, 90, 90)
RAW = (170, 190, 230)
SMOOTH = (30, 80, 200)


def smoothed(values: list[float], weight: float = 0.9) -> list[float]:
    """TensorBoard's exponential moving average, debiased so the first points are not pulled towards zero."""
    out, average = [], 0.0
    for index, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** index))
    return out


def loss_curve(losses: list[float], size: tuple[int, int] = (480, 240)) -> Image.Image:
    """Loss per step (light) and its moving average (dark), with the step and loss ranges written on the axes."""
    width, height = size
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 48, width - 10, 12, height - 24
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=AXES)
    if not losses:
        draw.text((left + 10, top + 10), "no steps yet", fill=AXES)
        return image
    low, high = min(losses), max(losses)
    span = (high - low) or 1.0

    def point(index: int, value: float) -> tuple[float, float]:
        x = left + (right - left) * (index / max(1, len(losses) - 1))
        return x, bottom - (bottom - top) * (value - low) / span

    for series, colour, line in ((losses, RAW, 1), (smoothed(losses), SMOOTH, 2)):
        points = [point(index, value) for index, value in enumerate(series)]
        if len(points) == 1:
            draw.ellipse([points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2], fill=colour)
        else:
            draw.line(points, fill=colour, width=line)
    draw.text((2, top - 4), f"{high:.3g}", fill=AXES)
    draw.text((2, bottom - 8), f"{low:.3g}", fill=AXES)
    draw.text((left, bottom + 6), "step 1", fill=AXES)
    draw.text((right - 60, bottom + 6), f"step {len(losses)}", fill=AXES)
    draw.text((left + 8, top), f"loss {losses[-1]:.4f}", fill=SMOOTH)
    return image
