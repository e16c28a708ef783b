"""The synthesised world of the embedded sound model: what a sound is, how it is drawn, named and rendered.

A sound is one to four events of the same kind in the first 2 seconds of a 2.048-second mono clip at 8 kHz.
Its caption names every property the evaluator measures back from the waveform:

- pitch: low (about 150 Hz), medium (350 Hz) or high (800 Hz), each drawn within +-6 %;
- timbre: a pure tone (sine), buzzing (band-limited sawtooth) or noise (white; noise has no pitch or contour);
- count: one to four events, evenly spread with gaps of at least 0.12 s;
- contour: steady, rising or falling (an exponential sweep from 0.8x to 1.25x the pitch, or back, per event);
- length: short (0.15-0.22 s) or long (most of the event's slot); named in captions, not scored.

Caption grammar (words in brackets optional, ``|`` alternatives)::

    tone  := COUNT [LENGTH] PITCH [CONTOUR] NOUN
    noise := COUNT [LENGTH] NOISE
    COUNT := a | one | two | three | four          LENGTH  := short | long
    PITCH := low | medium | high                   CONTOUR := steady | rising | falling  (steady may be unsaid)
    NOUN  := pure: tone(s) | beep(s) | whistle(s);  buzzing: buzzing tone(s) | buzz(es)
    NOISE := burst(s) of noise | noise burst(s)

e.g. "three short high beeps", "a long low buzzing tone", "two rising medium whistles", "a burst of noise".

Held out: the tone combinations (pitch, timbre, count, contour) with ``(pitch + timbre + count + contour) % 4 == 1``
(18 of 72) and noise in threes; training never draws them, the evaluator only draws them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 8000
SOUND_SECONDS = 2.0  # the events lie in the first 2 s
CLIP_SAMPLES = 16384  # 2.048 s: a whole number of the autoencoder's 256-sample latent frames
CLIP_SECONDS = CLIP_SAMPLES / SAMPLE_RATE

PITCHES = ("low", "medium", "high")
PITCH_HZ = {"low": 150.0, "medium": 350.0, "high": 800.0}
PITCH_JITTER = 0.06
TIMBRES = ("pure", "buzzy", "noise")
COUNTS = (1, 2, 3, 4)
CONTOURS = ("steady", "rising", "falling")
LENGTHS = ("short", "long")
SWEEP = (0.8, 1.25)  # a rising event goes from 0.8x to 1.25x its pitch (0.64 octave); falling the other way
MIN_GAP = 0.12  # seconds of silence between events
EDGE = 0.05  # seconds of silence at the clip's start

COUNT_WORDS = {1: ("a", "one"), 2: ("two",), 3: ("three",), 4: ("four",)}
NOUNS = {
    "pure": (("tone", "tones"), ("beep", "beeps"), ("whistle", "whistles")),
    "buzzy": (("buzzing tone", "buzzing tones"), ("buzz", "buzzes")),
    "noise": (("burst of noise", "bursts of noise"), ("noise burst", "noise bursts")),
}


@dataclass(frozen=True)
class SoundSpec:
    """One drawn sound: its named properties and the exact numbers it is rendered from."""

    pitch: str  # "" for noise
    timbre: str
    count: int
    contour: str  # "" for noise
    length: str
    hz: float  # the pitch's centre frequency (0 for noise)
    events: tuple[tuple[float, float], ...]  # (start, duration) in seconds
    loudness: float

    @property
    def combination(self) -> tuple[str, str, int, str]:
        return (self.pitch, self.timbre, self.count, self.contour)


def tone_combinations() -> list[tuple[str, str, int, str]]:
    return [(p, t, n, k) for p in PITCHES for t in TIMBRES[:2] for n in COUNTS for k in CONTOURS]


def is_held_out(combination: tuple[str, str, int, str]) -> bool:
    """Whether a (pitch, timbre, count, contour) combination is kept out of training."""
    pitch, timbre, count, contour = combination
    if timbre == "noise":
        return count == 3
    return (PITCHES.index(pitch) + TIMBRES.index(timbre) + count - 1 + CONTOURS.index(contour)) % 4 == 1


def combinations(held_out: bool) -> list[tuple[str, str, int, str]]:
    """The training (``held_out=False``) or evaluation combinations."""
    every = tone_combinations() + [("", "noise", n, "") for n in COUNTS]
    return [c for c in every if is_held_out(c) == held_out]


def draw_spec(rng: np.random.Generator, held_out: bool = False) -> SoundSpec:
    """A random sound from the training (or held-out) combinations, lengths and timings."""
    options = combinations(held_out)
    # Noise is one timbre of three: weight its 3-4 combinations like the 24 of each tone timbre.
    weights = np.array([8.0 if c[1] == "noise" else 1.0 for c in options])
    pitch, timbre, count, contour = options[int(rng.choice(len(options), p=weights / weights.sum()))]
    length = LENGTHS[int(rng.integers(2))]
    slot = (SOUND_SECONDS - EDGE - 0.05) / count
    duration = rng.uniform(0.15, 0.22) if length == "short" else rng.uniform(0.55, 0.7) * slot
    duration = min(duration, slot - MIN_GAP)
    events = []
    for i in range(count):
        slack = max(0.0, slot - MIN_GAP - duration)
        events.append((EDGE + i * slot + rng.uniform(0.0, slack), duration))
    hz = PITCH_HZ[pitch] * rng.uniform(1 - PITCH_JITTER, 1 + PITCH_JITTER) if pitch else 0.0
    return SoundSpec(pitch, timbre, count, contour, length, float(hz), tuple(events), float(rng.uniform(0.35, 0.6)))


def caption(spec: SoundSpec, rng: np.random.Generator | None = None) -> str:
    """The spec in words; with ``rng`` the optional words and synonyms are drawn, without it the full first form."""

    def pick(options):
        return options[int(rng.integers(len(options)))] if rng is not None else options[0]

    def maybe(word: str, p: float) -> str:
        return word if rng is None or rng.random() < p else ""

    singular, plural = pick(NOUNS[spec.timbre])
    words = [pick(COUNT_WORDS[spec.count]), maybe(spec.length, 0.7)]
    if spec.timbre != "noise":
        words.append(spec.pitch)
        words.append(maybe(spec.contour, 0.5) if spec.contour == "steady" else spec.contour)
    words.append(singular if spec.count == 1 else plural)
    return " ".join(w for w in words if w)


def vocabulary() -> list[str]:
    """Every word a caption can use (the tokenizer's whole words)."""
    words = {w for forms in COUNT_WORDS.values() for w in forms}
    words |= set(LENGTHS) | set(PITCHES) | set(CONTOURS)
    words |= {w for nouns in NOUNS.values() for pair in nouns for form in pair for w in form.split()}
    return sorted(words)


def render(spec: SoundSpec, seed: int = 0) -> np.ndarray:
    """The clip as float32 samples in [-1, 1] (noise drawn from ``seed``)."""
    rng = np.random.default_rng([seed, 99])
    clip = np.zeros(CLIP_SAMPLES, dtype=np.float64)
    for start, duration in spec.events:
        first = int(round(start * SAMPLE_RATE))
        n = min(int(round(duration * SAMPLE_RATE)), CLIP_SAMPLES - first)
        u = np.arange(n) / max(1, n - 1)
        if spec.timbre == "noise":
            wave = rng.standard_normal(n) / 2.5
        else:
            low, high = SWEEP
            ratio = {"steady": np.ones(n), "rising": low * (high / low) ** u,
                     "falling": high * (low / high) ** u}[spec.contour]
            frequency = spec.hz * ratio
            phase = 2 * np.pi * np.cumsum(frequency) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi)
            if spec.timbre == "pure":
                wave = np.sin(phase)
            else:  # band-limited sawtooth: harmonics k with amplitude 1/k below 0.45 x the sample rate
                top = int(0.45 * SAMPLE_RATE / frequency.max())
                wave = sum(np.sin(k * phase) / k for k in range(1, top + 1)) / 1.2
        attack, release = int(0.01 * SAMPLE_RATE), int(0.03 * SAMPLE_RATE)
        envelope = np.ones(n)
        envelope[:attack] = np.linspace(0, 1, attack)[: n]
        envelope[n - release:] = np.minimum(envelope[n - release:], np.linspace(1, 0, release))
        clip[first:first + n] += spec.loudness * envelope * wave
    return np.clip(clip, -1, 1).astype(np.float32)


def example(seed: int, index: int, held_out: bool = False) -> tuple[SoundSpec, np.ndarray]:
    """The ``index``-th example of a seed: a pure function of (seed, index, split)."""
    rng = np.random.default_rng([seed, index, int(held_out)])
    spec = draw_spec(rng, held_out)
    return spec, render(spec, seed=int(rng.integers(2**31)))


def example_spec(seed: int, index: int, held_out: bool = False) -> SoundSpec:
    """The sound of ``example(seed, index, held_out)`` without rendering it."""
    return draw_spec(np.random.default_rng([seed, index, int(held_out)]), held_out)
