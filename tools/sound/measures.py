"""Measure a clip's properties back from its waveform with plain signal processing (numpy only).

- events: a 10 ms RMS envelope, frames above a quarter of its peak, runs closer than 60 ms merged, runs shorter
  than 40 ms dropped; their number is the count;
- timbre: spectral flatness (geometric over arithmetic mean of the power spectrum) of the events' frames says
  noise; otherwise the share of energy at the harmonics 2f, 3f, ... of the fundamental says buzzing or pure;
- pitch: per frame the autocorrelation's first strong peak (the period), the median over the events' frames;
- contour: the slope of log2 pitch against time inside each event times its duration (octaves of change), the
  median over events: above +0.2 rising, below -0.2 falling, else steady.

The thresholds sit between the synthesised classes (see ``tools/sound/world.py``): pitch between the geometric
means of the class centres, 0.64 octave of sweep against the 0.2 octave contour threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tools.sound.world import PITCH_HZ, PITCHES, SAMPLE_RATE

FRAME = 256  # 32 ms at 8 kHz: two periods of the lowest pitch
HOP = 80  # 10 ms
LOW_HIGH_HZ = float(np.sqrt(PITCH_HZ["low"] * PITCH_HZ["medium"]))
MEDIUM_HIGH_HZ = float(np.sqrt(PITCH_HZ["medium"] * PITCH_HZ["high"]))
NOISE_FLATNESS = 0.2
BUZZY_HARMONIC_SHARE = 0.12
CONTOUR_OCTAVES = 0.2


@dataclass(frozen=True)
class Measured:
    """What the waveform says (``pitch`` / ``contour`` are "" when there is no pitched event)."""

    count: int
    timbre: str
    pitch: str
    contour: str
    hz: float
    flatness: float
    harmonic_share: float
    octaves: float


def frames(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float64).reshape(-1)
    if len(samples) < FRAME:
        samples = np.pad(samples, (0, FRAME - len(samples)))
    count = 1 + (len(samples) - FRAME) // HOP
    index = np.arange(FRAME)[None, :] + HOP * np.arange(count)[:, None]
    return samples[index]


def events(samples: np.ndarray) -> list[tuple[int, int]]:
    """The events as (first frame, end frame) of the envelope (frames of ``HOP`` samples, centred windows)."""
    framed = frames(samples)
    rms = np.sqrt((framed[:, FRAME // 2 - HOP // 2: FRAME // 2 + HOP // 2] ** 2).mean(axis=1))
    peak = rms.max()
    if peak < 1e-3:
        return []
    active = rms > 0.25 * peak
    runs, start = [], None
    for i, on in enumerate([*active, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            runs.append([start, i])
            start = None
    merged: list[list[int]] = []
    for run in runs:
        if merged and run[0] - merged[-1][1] < 6:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    return [(a, b) for a, b in merged if b - a >= 4]


def frame_pitch(frame: np.ndarray) -> float:
    """The fundamental of one frame from its autocorrelation: the shortest lag with a peak near the highest."""
    frame = frame - frame.mean()
    spectrum = np.fft.rfft(frame * np.hanning(len(frame)), 2 * len(frame))
    correlation = np.fft.irfft(np.abs(spectrum) ** 2)[: len(frame)]
    if correlation[0] <= 0:
        return 0.0
    correlation = correlation / correlation[0]
    low, high = int(SAMPLE_RATE / 1500), int(SAMPLE_RATE / 90)
    window = correlation[low:high]
    peaks = [i for i in range(1, len(window) - 1) if window[i] >= window[i - 1] and window[i] > window[i + 1]]
    if not peaks:
        return 0.0
    best = max(window[i] for i in peaks)
    if best <= 0:  # no lag repeats the frame: nothing periodic (a decoded clip can be this far off)
        return 0.0
    lag = next(i for i in peaks if window[i] >= 0.85 * best)
    a, b, c = window[lag - 1], window[lag], window[lag + 1]
    shift = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c else 0.0
    return SAMPLE_RATE / (low + lag + shift)


def spectral_flatness(framed: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(framed * np.hanning(FRAME), axis=1))[:, 1:] ** 2 + 1e-12
    return float(np.median(np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)))


def harmonic_share(framed: np.ndarray, hz: float) -> float:
    """The share of the frames' energy near 2f, 3f, ... out of that near f, 2f, 3f, ... (within a quarter of f)."""
    size = 4 * FRAME
    power = (np.abs(np.fft.rfft(framed * np.hanning(FRAME), size, axis=1)) ** 2).sum(axis=0)
    bins = np.fft.rfftfreq(size, 1 / SAMPLE_RATE)
    energy = [power[np.abs(bins - k * hz) < hz / 4].sum() for k in range(1, int(SAMPLE_RATE / 2 / hz) + 1)]
    total = sum(energy)
    return float(sum(energy[1:]) / total) if total > 0 else 0.0


def pitch_class(hz: float) -> str:
    return PITCHES[0] if hz < LOW_HIGH_HZ else PITCHES[1] if hz < MEDIUM_HIGH_HZ else PITCHES[2]


def measure(samples: np.ndarray) -> Measured:
    """Count, timbre, pitch and contour of a clip at ``SAMPLE_RATE``."""
    found = events(samples)
    if not found:
        return Measured(0, "silence", "", "", 0.0, 0.0, 0.0, 0.0)
    framed = frames(samples)
    inside = np.concatenate([np.arange(a, b) for a, b in found])
    flatness = spectral_flatness(framed[inside])
    changes, pitches = [], []
    for a, b in found:
        trimmed = np.arange(a + 1, b - 1) if b - a > 4 else np.arange(a, b)
        hz = np.array([frame_pitch(framed[i]) for i in trimmed])
        voiced = hz > 0
        pitches += list(hz[voiced])
        if voiced.sum() >= 3:
            t = trimmed[voiced] * HOP / SAMPLE_RATE
            slope = np.polyfit(t, np.log2(hz[voiced]), 1)[0]
            changes.append(slope * (t[-1] - t[0]))
    hz = float(np.exp(np.median(np.log(pitches)))) if pitches else 0.0
    if flatness > NOISE_FLATNESS or hz == 0.0:
        return Measured(len(found), "noise", "", "", hz, flatness, 0.0, 0.0)
    share = harmonic_share(framed[inside], hz)
    octaves = float(np.median(changes)) if changes else 0.0
    contour = "rising" if octaves > CONTOUR_OCTAVES else "falling" if octaves < -CONTOUR_OCTAVES else "steady"
    return Measured(len(found), "buzzy" if share > BUZZY_HARMONIC_SHARE else "pure", pitch_class(hz), contour, hz,
                    flatness, share, octaves)
