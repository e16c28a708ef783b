"""Sound to files and back: WAV with the standard library, FLAC/MP3/OGG/Opus/AAC through the ffmpeg that
imageio-ffmpeg bundles, the job's parameters in each file's metadata, and a reader that gets them back.

The parameters travel as JSON in the file's comment: a WAV ``LIST``/``INFO`` ``ICMT`` chunk (written here, read by
any tag reader), and ``-metadata comment=`` for the other formats (a Vorbis comment in FLAC/OGG/Opus, an ID3
``COMM`` frame in MP3). ``read_parameters`` reads either kind.
"""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modules.errors import RequestError


@dataclass(frozen=True)
class AudioFormat:
    """``codec`` / ``container``: ffmpeg's names (None: written without ffmpeg); ``rates``: the sample rates the
    codec takes (others are resampled to the nearest one above)."""

    name: str
    extension: str
    media_type: str
    codec: str | None = None
    container: str | None = None
    rates: tuple[int, ...] = ()


FORMATS: dict[str, AudioFormat] = {fmt.name: fmt for fmt in (
    AudioFormat("wav", "wav", "audio/wav"),
    AudioFormat("flac", "flac", "audio/flac", "flac", "flac"),
    AudioFormat("mp3", "mp3", "audio/mpeg", "libmp3lame", "mp3",
                (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
    AudioFormat("ogg", "ogg", "audio/ogg", "libvorbis", "ogg"),
    AudioFormat("opus", "opus", "audio/opus", "libopus", "opus", (8000, 12000, 16000, 24000, 48000)),
    AudioFormat("aac", "aac", "audio/aac", "aac", "adts",
                (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)),
)}
PARAMETERS_KEY = "comment"


def ffmpeg() -> str:
    """The path of the bundled ffmpeg binary."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _int16(samples: np.ndarray) -> np.ndarray:
    """(channels, n) floats in [-1, 1] -> interleaved 16-bit PCM."""
    clipped = np.clip(np.nan_to_num(samples.astype(np.float32)), -1.0, 1.0)
    return (clipped.T * 32767.0).round().astype("<i2")


def as_channels(samples: np.ndarray) -> np.ndarray:
    """Any waveform array -> (channels, n) float32."""
    array = np.asarray(samples, dtype=np.float32)
    if array.ndim == 1:
        return array[None, :]
    if array.ndim != 2:
        raise ValueError(f"a waveform has 1 or 2 dimensions, not {array.ndim}")
    return array


def encode(samples: np.ndarray, sample_rate: int, fmt: str = "wav", parameters: dict[str, Any] | None = None) -> bytes:
    """The file's bytes for ``samples`` ((channels, n) or (n,) floats in [-1, 1]) with ``parameters`` embedded."""
    spec = FORMATS[fmt]
    channels = as_channels(samples)
    comment = json.dumps(parameters, ensure_ascii=False) if parameters else ""
    if spec.codec is None:
        return _wav(channels, sample_rate, comment)
    command = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar", str(sample_rate),
               "-ac", str(channels.shape[0]), "-i", "pipe:0", "-c:a", spec.codec]
    if spec.rates and sample_rate not in spec.rates:
        command += ["-ar", str(min((rate for rate in spec.rates if rate >= sample_rate), default=spec.rates[-1]))]
    if comment:
        command += ["-metadata", f"{PARAMETERS_KEY}={comment}"]
    command += ["-f", spec.container, "pipe:1"]
    done = subprocess.run(command, input=_int16(channels).tobytes(), capture_output=True, check=False)
    if done.returncode != 0 or not done.stdout:
        raise RuntimeError(f"ffmpeg could not encode {fmt}: {done.stderr.decode(errors='replace').strip()[-300:]}")
    return done.stdout


def _wav(channels: np.ndarray, sample_rate: int, comment: str) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels.shape[0])
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(_int16(channels).tobytes())
    data = bytearray(buffer.getvalue())
    if comment:
        data += _info_chunk(comment)
        struct.pack_into("<I", data, 4, len(data) - 8)  # the RIFF size now covers the LIST chunk
    return bytes(data)


def _info_chunk(comment: str) -> bytes:
    text = comment.encode("utf-8") + b"\0"
    sub = b"ICMT" + struct.pack("<I", len(text)) + text + (b"\0" if len(text) % 2 else b"")
    body = b"INFO" + sub
    return b"LIST" + struct.pack("<I", len(body)) + body


def _wav_comment(data: bytes) -> str | None:
    """The ICMT text of a RIFF/WAVE file's LIST/INFO chunk, walking its chunks."""
    position = 12
    while position + 8 <= len(data):
        chunk, size = data[position:position + 4], struct.unpack_from("<I", data, position + 4)[0]
        body = data[position + 8:position + 8 + size]
        if chunk == b"LIST" and body[:4] == b"INFO":
            inner = 4
            while inner + 8 <= len(body):
                sub, length = body[inner:inner + 4], struct.unpack_from("<I", body, inner + 4)[0]
                if sub == b"ICMT":
                    return body[inner + 8:inner + 8 + length].split(b"\0", 1)[0].decode("utf-8", errors="replace")
                inner += 8 + length + (length % 2)
        position += 8 + size + (size % 2)
    return None


def read_parameters(source: str | Path | bytes) -> dict[str, Any] | None:
    """The parameters embedded by ``encode`` in an audio file (path or bytes), or None when it has none."""
    data = Path(source).read_bytes() if not isinstance(source, bytes) else source
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        comment = _wav_comment(data)
    else:
        # MP3 and FLAC keep tags for the whole file; Ogg keeps them in the audio stream's header
        comment = _ffmpeg_metadata(data).get(PARAMETERS_KEY) or _ffmpeg_metadata(data, "0:s:a:0").get(PARAMETERS_KEY)
    if not comment:
        return None
    try:
        parsed = json.loads(comment)
    except ValueError:
        return {"comment": comment}
    return parsed if isinstance(parsed, dict) else {"comment": comment}


def _ffmpeg_metadata(data: bytes, source: str = "0") -> dict[str, str]:
    """The tags ffmpeg reads from a file (``source``: the file's own, or a stream's such as "0:s:a:0"), lower-cased
    keys, ffmetadata's escapes undone."""
    done = subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-i", "pipe:0", "-map_metadata", source,
                           "-f", "ffmetadata", "pipe:1"], input=data, capture_output=True, check=False)
    tags: dict[str, str] = {}
    text = done.stdout.decode("utf-8", errors="replace")
    for line in re.split(r"(?<!\\)\n", text):
        if not line or line.startswith((";", "[")) or "=" not in line:
            continue
        key, value = re.split(r"(?<!\\)=", line, maxsplit=1)
        tags.setdefault(key.strip().lower(), re.sub(r"\\(.)", r"\1", value, flags=re.DOTALL))
    return tags


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # (channels, n) float32
    sample_rate: int

    @property
    def duration(self) -> float:
        return self.samples.shape[1] / self.sample_rate


_STREAM = re.compile(r"Audio: [^\n]*?(\d+) Hz, ([^,\n]+)")


def decode(source: str | Path | bytes, *, sample_rate: int | None = None, channels: int | None = None,
           field: str = "init_audio") -> DecodedAudio:
    """Any audio file ffmpeg reads -> floats, resampled / remixed when asked; a ``RequestError`` naming ``field``
    when it is not audio (a corrupt upload)."""
    data = Path(source).read_bytes() if not isinstance(source, bytes) else source
    probe = subprocess.run([ffmpeg(), "-hide_banner", "-i", "pipe:0"], input=data, capture_output=True, check=False)
    found = _STREAM.search(probe.stderr.decode(errors="replace"))
    if found is None:
        raise RequestError(field, "the file is not audio ffmpeg can read (damaged, or another kind of file)")
    rate = sample_rate or int(found.group(1))
    layout = found.group(2).strip()
    count = channels or {"mono": 1, "stereo": 2}.get(layout) or int((re.match(r"\d+", layout) or ["1"])[0])
    done = subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-i", "pipe:0", "-f", "f32le",
                           "-ar", str(rate), "-ac", str(count), "pipe:1"], input=data, capture_output=True,
                          check=False)
    if done.returncode != 0:
        raise RequestError(field, f"the audio cannot be decoded: {done.stderr.decode(errors='replace')[-200:]}")
    samples = np.frombuffer(done.stdout, dtype="<f4").reshape(-1, count).T.copy()
    if samples.shape[1] == 0:
        raise RequestError(field, "the audio file holds no sound")
    return DecodedAudio(samples, rate)
