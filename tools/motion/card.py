"""The embedded motion model's card (README.md): how to use it, how it was made, how well it does.

The trainer writes the card from its record (``training_config.json``); ``bench/eval_motion.py --card`` then puts
its measured table between the ``EVAL_START`` / ``EVAL_END`` markers, so the numbers on the card are the evaluator's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tools.motion import clips
from tools.shapes import dataset as world


def replace_between(text: str, start: str, end: str, body: str) -> str:
    """``text`` with what lies between the markers replaced by ``body`` (appended with the markers when missing)."""
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        return before + block + rest.split(end, 1)[1]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def write_card(out: Path, record: dict[str, Any]) -> Path:
    """README.md of the adapter folder, with the accuracy section left to the evaluator (kept when rewritten)."""
    from modules.video.pipelines import MOTION_LORA_FILE
    from tools.motion.train import EVAL_END, EVAL_START, folder_size

    base, timing, recommended = record["base"], record["timing"], record["recommended"]
    steps_done = record.get("steps_done", record["steps"])
    stopped = (f" The time cap stopped it after {steps_done} of {record['steps']} planned steps; the learning rate "
               f"is constant after warm-up, so `{record['reproduce']}` gives the same weights."
               if steps_done < record["steps"] else "")
    note = f" {timing['note']}" if timing.get("note") else ""
    weights = record.get("motion_weights") or ()
    odds = ("; each clip's motion drawn with the odds " + ", ".join(
        f"{motion} {weight:g}" for motion, weight in zip(record.get("motions", ()), weights, strict=False))
        if weights else "")
    rank = record.get("lora_rank", 0)
    loading = ("It loads like any motion adapter (`MotionAdapter.from_pretrained`, then `AnimateDiffPipeline` with "
               "the base\nmodel), with no network.")
    lora_line = ""
    if rank:
        loading = (
            "It loads like any motion adapter, with the LoRA beside it, with no network:\n\n"
            "```python\nfolder = \"models/animatediff/sfumato-shapes-motion\"\n"
            "adapter = MotionAdapter.from_pretrained(folder)\n"
            f"pipe = AnimateDiffPipeline.from_pretrained(\"models/Stable-diffusion/{base['name']}\", "
            "motion_adapter=adapter)\n"
            "pipe.load_lora_weights(folder)  # its pytorch_lora_weights.safetensors\n```\n\n"
            "Sfumato's Video tab and API load both when this motion model is chosen.")
        lora_line = (
            f"\n- **The LoRA beside it** (`{MOTION_LORA_FILE}`, diffusers' LoRA format, rank {rank}): on the base "
            "UNet's\n  cross-attention keys and values, learnt with the motion modules. The base model never saw "
            "the motion\n  words (their embeddings in its text encoder are still random), so its features barely "
            "tell \"moving up\"\n  from \"moving down\" or \"growing\" from \"shrinking\"; the LoRA makes them "
            "readable to the motion modules\n  (`python -m tools.motion.text_probe --readable --lora MODEL` measures "
            "it). Like AnimateDiff v3's adapter\n  LoRA, it belongs to this motion model: use the two together.")
        text_rank = record.get("text_lora_rank", 0)
        if text_rank:
            lora_line += (
                f"\n  The same file holds a rank-{text_rank} LoRA on the text encoder's self-attention (keys "
                "`text_encoder.…`), learnt\n  with them, so the motion words already come out of the text encoder "
                "apart. The Video tab puts it on its own\n  copy of the text encoder: images made with the base "
                "model read their prompts as before.")
    learners = ("only the motion modules learn (each starts with a\nzero output projection, so at step 0 the base's "
                "images are unchanged)")
    if rank:
        learners = ("only the motion modules and the LoRA learn (the modules start with a\nzero output projection "
                    "and the LoRA with zero up-projections, so at step 0 the base's images are unchanged)")
    ending = ""
    if recommended.get("motion_end", 1.0) < 1.0:
        ending = (f", motion end {recommended['motion_end']:g} (the adapter acts in the first "
                  f"{100 * recommended['motion_end']:.0f} %\n  of the steps; the image model alone finishes the "
                  "frames, which keeps moving shapes sharp: the\n  Evaluation table shows both)")
    readout = ""
    if record.get("readable_weight"):
        readout = (f" A training-only readout (a linear head per spatial transformer, not saved) adds "
                   f"{record['readable_weight']:g} x the cross-entropy of reading the asked motion from every pixel "
                   "of the UNet's features, so the LoRA learns from the first step to make the motion words readable.")
    phrases = "\n".join(f"                | \"{p}\"" for p in clips.MOTION_PHRASES.values())
    phrases = phrases.replace("                |", "    motion     :=", 1)
    text = f"""---
license: agpl-3.0
library_name: diffusers
pipeline_tag: text-to-video
base_model: {base["name"]}
tags: [animatediff, motion-adapter, sfumato, shapes]
---

# Sfumato shapes motion — the embedded motion model

An AnimateDiff `MotionAdapter` for the embedded image model `{base["name"]}`, trained by Sfumato's own script on
its shapes world set in motion: one shape moving left / right / up / down, growing, shrinking or staying still.
{loading}

- **Use it with:** the base model at its recommended settings ({recommended["sampler"]}, {recommended["steps"]}
  steps, CFG {recommended["guidance"]:g}), {recommended["frames"]} frames of 64 x 64, {recommended["fps"]} fps{ending}.
- **Size on disk:** {folder_size(out) / 1e6:.1f} MB (float16 weights; they load as float32 too).
- **Architecture:** motion modules of {record["transformer_layers"]} temporal transformer layer(s) after every
  block of the base UNet and in its middle block, attention heads {record["head_dim"]} wide, sinusoidal frame
  positions up to {record["max_seq_length"]} frames.{lora_line}

## Prompts
Caption grammar (colour and shape words are the base model's):

    caption    := object " " motion [[","] backdrop] | backdrop ", " object " " motion
    object     := article colour shape
    backdrop   := "on" article colour "background"
    article    := "a" | "an"                       ("an" before a vowel: "an orange star")
    colour     := {" | ".join(f'"{c}"' for c in world.COLOURS)}
    shape      := {" | ".join(f'"{s}"' for s in world.SHAPES)}
{phrases}

e.g. "a red circle moving to the right, on a blue background". Moving shapes cross the whole picture (side
16-22 px at 64); growing and shrinking happen in the centre (side about 16 <-> 35 px); a still shape is small or
large, on the left, in the centre or on the right. Training named the background in 90 % of captions.

## How it was trained
```
{record["command"]}
```
Took {timing["minutes"]:.1f} minutes on {timing["threads"]} CPU thread(s) (torch {timing["torch"]}), encoding the
clips {timing["prepare_minutes"]:.1f} of them.{stopped}{note} The same command, seed, thread count and PyTorch version
give the same weights; `--resume` continues from `.train-state/` after an interruption.

The base model's autoencoder, text encoder and UNet are frozen; {learners}. {record["clips"]} fixed clips of
{record["frames"]} frames (`tools/motion/clips.py`, training combinations only{odds}) encoded once; {record["steps"]}
steps of {record["batch"]} clips, AdamW {record["lr"]:g} after {record["warmup"]} warm-up steps, EMA
{record["ema_decay"]:g}, {record["caption_dropout"]:.0%} empty captions (for classifier-free guidance), the base's
{base["prediction_type"]} loss weighted as its trainer does (Min-SNR gamma {record["snr_gamma"]:g}, high-noise steps
at full weight, 1 + {record["object_loss_weight"]:g} on the shape's latent pixels), and
{record["high_noise_share"]:.0%} of the timesteps drawn from the noisier half of the schedule, where motion is laid
out.{readout}

Held-out split: 1 in {clips.HELDOUT_MODULUS} combinations of (shape, colour, background, motion) by CRC-32 of its
name ({len(clips.heldout_specs())} of {len(clips.all_specs())}); training never drew them, the evaluator asks only
them.

All settings are in `training_config.json`.

## Measured
`python bench/eval_motion.py MODEL --card` generates clips for held-out prompts (one fixed seed each) with
`AnimateDiffPipeline` (base + this adapter) and follows the shape through each frame from its pixels
(`tools/motion/track.py`: colours and shape by the image model's own measurement, centroid and area from the colour
mask); the motion is read from how the centroid and area change between the first and last four frames.

{EVAL_START}
(not measured yet)
{EVAL_END}
"""
    if (out / "samples.png").is_file():
        text += ("\nThe evaluator's first clips, one per row (16 frames left to right; prompts in the order of "
                 "`tools.motion.clips.evaluation_cases`):\n\n![samples](samples.png)\n")
    card = out / "README.md"
    old = card.read_text(encoding="utf-8") if card.is_file() else ""
    if EVAL_START in old and EVAL_END in old:
        measured = old.split(EVAL_START, 1)[1].split(EVAL_END, 1)[0].strip("\n")
        text = replace_between(text, EVAL_START, EVAL_END, measured)
    card.write_text(text, encoding="utf-8")
    return card
