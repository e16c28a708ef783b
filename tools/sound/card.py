"""The sound model's card (README.md with YAML front matter); the evaluator fills its table between markers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tools.sound import world
from tools.sound.train import EVAL_END, EVAL_START


def write_card(out: Path, record: dict[str, Any]) -> None:
    """Write OUT/README.md, keeping an evaluation table already there."""
    path = Path(out) / "README.md"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    table = old.split(EVAL_START, 1)[1].split(EVAL_END, 1)[0].strip("\n") if EVAL_START in old and EVAL_END in old \
        else "(not evaluated yet: run `python bench/eval_sound.py MODEL --card`)"
    timing = record["timing"]
    stopped = "" if record["reproduce"] == record["command"] else \
        f" (stopped by time; the same weights: `{record['reproduce']}`)"
    grammar = (world.__doc__ or "").split("Caption grammar", 1)[1].split("Held out:", 1)[0]
    held = (world.__doc__ or "").split("Held out:", 1)[1].strip()
    measured = record.get("autoencoder_check") or {}
    check = "" if not measured else (
        "- Autoencoder alone (48 held-out clips encoded and decoded, measured like the table above): "
        + ", ".join(f"{name} {100 * value:.1f} %" for name, value in measured.items()) + ".\n")
    notes = "".join(f"- {note}\n" for note in record.get("notes", []))
    text = f"""---
license: mit
library_name: diffusers
pipeline_tag: text-to-audio
tags: [stable-audio, tiny, synthetic]
---

# sfumato-sounds

A tiny text-to-audio model in the Stable Audio layout (`StableAudioPipeline`: `AutoencoderOobleck` on the
waveform, `T5EncoderModel` + `T5Tokenizer`, `StableAudioProjectionModel`, `StableAudioDiTModel`,
`CosineDPMSolverMultistepScheduler`), trained from scratch by `tools/sound/train.py` on a procedurally
synthesised world of beeps, buzzes and noise bursts, so the Audio tab works with no download. It makes
{world.CLIP_SECONDS:g}-second mono clips at {world.SAMPLE_RATE} Hz (shorter requests are cut from them).

Its autoencoder's decoder is not learnt: it is a small synthesiser written into the Oobleck layers
(`tools/sound/oscillators.py`). Each latent frame (256 samples, 32 ms) holds the frequency and the amplitudes of a
sine, a three-harmonic buzz and noise; the transposed convolution turns the frequency into a phase ramp, and the
snake activation (`x + sin^2 x`) of a pair of channels turns that ramp into a cosine whose amplitude follows the
envelope. So any pitch and any sweep can be made, which a learnt decoder of this size could not (its pitch kept to
a few values and sweeps came out steady). The encoder is learnt: it reads those controls back from a waveform
(audio-to-audio). Run it in float32 (its phases reach hundreds of radians); `training_config.json` says so and
Sfumato loads it that way on any device. The phase restarts at each frame's centre (a cosine, so a steady tone
stays continuous): measured 10 ms at a time, a low tone's pitch wobbles by up to 18 %, which is heard as a slight
roughness; over 0.2 s it is within 3 % of the asked pitch.

Recommended: {record['recommended']['steps']} steps, CFG {record['recommended']['guidance']:g}.

## Caption grammar
{grammar.strip(chr(10))}

Held out: {held}

## Evaluation
{EVAL_START}
{table}
{EVAL_END}

## Training
- Command: `{record['command']}`{stopped}
- {record['steps_done']} steps of a {record['dit_layers']}-layer transformer, batch {record['batch']}, on the exact
  controls of {record['examples']} training sounds; encoder {record['ae_steps']} steps, batch {record['ae_batch']};
  {timing['minutes']:.1f} min in all ({timing['autoencoder_minutes']:.1f} for the encoder) on {timing['threads']}
  CPU threads, torch {timing['torch']}.
- Text encoder: {record['t5_layers']}-layer T5 of width {record['t5_width']}
  ({'trained with the transformer' if record['train_text_encoder'] else 'frozen random; only the projection learns'});
  tokenizer: a Unigram model whose pieces are the caption words (characters as fallback), built by the script.
{check}{notes}- Everything it was trained with is in `training_config.json`.
"""
    path.write_text(text, encoding="utf-8")
