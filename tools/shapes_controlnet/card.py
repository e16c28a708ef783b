"""The embedded ControlNet's model card (README.md): how to use it, how it was made, how well it does.

The trainer writes the card from its record (``training_config.json``); ``bench/eval_controlnet.py --card`` then
puts its measured tables between the ``EVAL_START`` / ``EVAL_END`` markers, so the numbers on the card are always
the evaluator's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tools.shapes import dataset as world
from tools.shapes_controlnet.data import FREE_SIDE


def replace_between(text: str, start: str, end: str, body: str) -> str:
    """``text`` with what lies between the markers replaced by ``body`` (the markers and body appended when the
    markers are missing)."""
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        return before + block + rest.split(end, 1)[1]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def write_card(out: Path, record: dict[str, Any]) -> Path:
    """README.md of the ControlNet folder, with the accuracy section left to the evaluator."""
    from tools.shapes_controlnet.train import EVAL_END, EVAL_START, folder_size

    recipe = record["recipe"]
    base = record["base"]
    timing = record["timing"]
    recommended = record["recommended"]
    where = ("left / centre / right, vertically centred" if base["rows"] == 1 else
             "a 3 x 3 grid (top / middle / bottom x left / centre / right)")
    size_mb = folder_size(out) / 1e6
    steps_done = record.get("steps_done", record["steps"])
    stopped = (f" The time cap stopped it after {steps_done} of {record['steps']} planned steps; the learning rate "
               f"is constant after warm-up, so `{record['reproduce']}` gives the same weights."
               if steps_done < record["steps"] else "")
    scribble = 1.0 - recipe["canny"] - recipe["silhouette"]
    text = f"""---
license: agpl-3.0
library_name: diffusers
pipeline_tag: text-to-image
base_model: {base["name"]}
tags: [controlnet, scribble, canny, sfumato, shapes]
---

# Sfumato shapes scribble — the embedded ControlNet

A ControlNet for the embedded model `{base["name"]}`, trained by Sfumato's own script on its shapes world: the
**control image decides the shape, its size and where it is; the prompt decides the colours**. Draw a circle in the
top left and prompt "a red star on a blue background": you get a red circle in the top left on blue.

- **Control image:** white strokes on black, RGB, the size of the generation (64 x 64) — sd-webui-controlnet's
  scribble convention. A clean outline, a wobbly hand-drawn one (1–3 px at 64 px), the edge map of a picture
  (the "canny" preprocessor's output) or a filled white silhouette all work.
- **Use it with:** the base model at its recommended settings ({recommended["sampler"]}, {recommended["steps"]} steps,
  CFG {recommended["guidance"]:g}); control weight 1.
- **Size on disk:** {size_mb:.1f} MB (weights stored as float16; they load as float32 too).

```python
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
controlnet = ControlNetModel.from_pretrained("models/ControlNet/{out.name}")
pipe = StableDiffusionControlNetPipeline.from_pretrained(
    "models/Stable-diffusion/{base["name"]}", controlnet=controlnet, safety_checker=None)
image = pipe("a red star, on a blue background", image=scribble_64x64, height=64, width=64,
             guidance_scale={recommended["guidance"]:g}).images[0]
```
In the studio and the A1111 API it is the ControlNet unit's model `{out.name}`, with module `none` for a white
scribble on black, `invert` for a black drawing on white, or `canny` for a picture (pixel perfect keeps the edges
white at 64 px; a map made at 512 px and resized down has grey lines, tried in the "canny 512 px" row below).
Stability's `control/sketch` picks it by its name.

## How it was trained
```
{record["command"]}
```
Took {timing["minutes"]:.1f} minutes on {timing["threads"]} CPU thread(s) (torch {timing["torch"]}), of which
{timing["prepare_minutes"]:.1f} drawing and encoding the examples.{stopped} The same command, seed, thread count
and PyTorch version give the same weights; `--resume` continues from `.train-state/` after an interruption.

- `ControlNetModel.from_unet` on the base UNet (its encoder and middle block copied, zero-initialised output
  convolutions), conditioning embedding channels {tuple(record["embedding_channels"])}: two stride-2 stages,
  because the base autoencoder maps 64 px to 16 x 16 latents.
- The base autoencoder, text encoder and UNet are frozen; only the ControlNet is trained, with the base's noise
  schedule and {base["prediction_type"]} (from its scheduler config) and the base trainer's loss weighting
  (Min-SNR gamma {record["snr_gamma"]:g}, high-noise steps at full weight, 1 + {record["object_loss_weight"]:g} on
  the shape's latent pixels).
- {steps_done} steps of batch {record["batch"]} over {record["examples"]} fixed examples, AdamW
  {record["lr"]:g} with {record["warmup"]} warm-up steps, then constant, EMA {record["ema_decay"]},
  {record["caption_dropout"]:.0%} empty captions (the unconditional half of CFG sees the control image too);
  bfloat16 autocast {"on" if record.get("bf16") else "off"} (weights and loss in float32).
- Base model: `{base["name"]}`, UNet sha256 `{base["unet_sha256"][:16]}…`; all settings in
  `training_config.json`.

## Data
Images of the shapes world (`tools/shapes/dataset.py`: one shape on a flat background; positions {where}), drawn
only from the training combinations, with their control images (`tools/shapes_controlnet/control.py`):
- {scribble:.0%} scribbled outlines: stroke {recipe["stroke_width"][0]:g}–{recipe["stroke_width"][1]:g} px, \
wobble up to {recipe["wobble"]:g} px, {recipe["gap_probability"]:.0%} left open by a small gap;
- {recipe["canny"]:.0%} canny edge maps of the image (OpenCV, the studio preprocessor's thresholds);
  {recipe["silhouette"]:.0%} filled silhouettes;
- {recipe["faint_probability"]:.0%} of all maps dimmed to {recipe["faint"][0]:g}–{recipe["faint"][1]:g} of white \
(a map made at 512 px and resized to 64 px has grey lines);
- {recipe["free_geometry"]:.0%} of the shapes sit at any position and size (box \
{FREE_SIDE[0]:g}–{FREE_SIDE[1]:g} px), not only at the world's anchors, so a scribble anywhere is followed.

Captions follow the dataset's grammar and prompt forms. Their colours are always the image's; in
{recipe["conflict_probability"]:.0%} of them the shape, size and/or position named are another combination's
(the control image must win), and the prompt forms leave size, position or background out. Training never
draws a held-out combination as an image, and never names one in a caption, in any prompt form; the evaluator
uses only held-out combinations, for the control image and the prompt alike.

## Measured accuracy
{EVAL_START}
_Not measured yet: run `python bench/eval_controlnet.py models/ControlNet/{out.name} --base \
models/Stable-diffusion/{base["name"]} --card`._
{EVAL_END}

## Limits
- It knows the shapes world only: {", ".join(world.SHAPES)}; colours {", ".join(world.COLOURS)}.
- One shape per image; a control image with several outlines gives an undefined result.
- The control image is read at 64 x 64; larger ones are resized by the pipeline.
"""
    path = Path(out) / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
