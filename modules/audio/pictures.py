"""A picture of a sound: its waveform over its spectrogram, drawn with numpy and Pillow (no plotting library), for
the Audio tab and history, where a clip is easier to tell apart at a glance than by playing it."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND = (24, 24, 27)
WAVE_COLOUR = (96, 165, 250)


def waveform_picture(samples: np.ndarray, sample_rate: int, width: int = 640, height: int = 320) -> Image.Image:
    """The waveform (top third: each column spans its samples' min..max, channels mixed) above a log-magnitude
    spectrogram (frequency up, time right), ``width`` x ``height`` pixels."""
    mono = np.asarray(samples, dtype=np.float32)
    mono = mono.mean(axis=0) if mono.ndim == 2 else mono
    wave_height = height // 3
    picture = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    middle = wave_height / 2
    if mono.size:
        edges = np.linspace(0, mono.size, width + 1).astype(int)
        for x in range(width):
            part = mono[edges[x]:max(edges[x + 1], edges[x] + 1)]
            low, high = float(np.clip(part.min(), -1, 1)), float(np.clip(part.max(), -1, 1))
            draw.line([(x, middle - high * (middle - 1)), (x, middle - low * (middle - 1))], fill=WAVE_COLOUR)
    spectrum = spectrogram(mono)
    if spectrum.size:
        picture.paste(_colour(spectrum).resize((width, height - wave_height), Image.Resampling.BILINEAR),
                      (0, wave_height))
    return picture


def spectrogram(mono: np.ndarray, window: int = 512) -> np.ndarray:
    """dB magnitudes, (frequency bins, frames), low frequencies last so row 0 is the top of a picture."""
    size = min(window, max(16, 1 << int(np.log2(max(mono.size, 16)))))
    hop = max(1, size // 4)
    if mono.size < size:
        mono = np.pad(mono, (0, size - mono.size))
    frames = np.lib.stride_tricks.sliding_window_view(mono, size)[::hop]
    magnitudes = np.abs(np.fft.rfft(frames * np.hanning(size), axis=1)).T
    decibels = 20 * np.log10(magnitudes + 1e-6)
    return decibels[::-1]


def _colour(decibels: np.ndarray) -> Image.Image:
    """dB -> a dark-to-bright colour ramp over the loudest 80 dB."""
    top = float(decibels.max())
    level = np.clip((decibels - (top - 80.0)) / 80.0, 0.0, 1.0)
    red = np.clip(level * 1.6, 0, 1)
    green = np.clip(level * 1.6 - 0.5, 0, 1)
    blue = np.clip(0.35 + level * 0.8 - np.clip(level * 2 - 1, 0, 1) * 0.9, 0, 1)
    rgb = (np.stack([red, green, blue], axis=-1) * 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")
