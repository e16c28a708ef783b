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
- {record['steps_done']} transformer steps, batch {record['batch']}; autoencoder {record['ae_steps']} steps;
  {timing['minutes']:.1f} min in all ({timing['autoencoder_minutes']:.1f} for the autoencoder) on {timing['threads']}
  CPU threads, torch {timing['torch']}.
- Text encoder: {record['t5_layers']}-layer T5 of width {record['t5_width']}
  ({'trained with the transformer' if record['train_text_encoder'] else 'frozen random; only the projection learns'});
  tokenizer: a Unigram model whose pieces are the caption words (characters as fallback), built by the script.
{check}- Everything it was trained with is in `training_config.json`.
"""
    path.write_text(text, encoding="utf-8")
