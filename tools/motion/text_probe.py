"""How far apart the base model keeps the motion captions: what the motion modules can read of the asked motion.

The motion modules are temporal self-attention; the caption reaches them only through the text encoder and the
UNet's spatial cross-attention. This measures, with no training, the relative distance ``|a - b| / mean(|a|, |b|)``
between the features of captions that differ only in the motion phrase (and, for scale, in a colour or a shape
word) at three places: the text encoder's output (77 x width), the output of each spatial cross-attention of the
UNet (one fixed noisy latent, at a high and a middle timestep), and the UNet's prediction. Also the norm of each
word's input embedding: rows of words the base never saw keep their random initial norm. Usage::

    python -m tools.motion.text_probe [--base models/Stable-diffusion/sfumato-shapes] [--lora MOTION_MODEL_DIR]

``--lora`` measures the UNet with the LoRA a motion model ships (``pytorch_lora_weights.safetensors``) loaded.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from tools.motion.clips import MOTION_PHRASES, MOTIONS

WORDS: tuple[str, ...] = ("red", "circle", "background", "left", "right", "centre", "small", "large",
                          "moving", "to", "up", "down", "growing", "shrinking", "staying", "still", "from", "top")
SUBJECT = "a red circle {motion}, on a blue background"
# Reference pairs besides the motions: the same caption with another colour or another shape.
REFERENCES: dict[str, str] = {"green (colour)": "a green circle moving to the right, on a blue background",
                              "square (shape)": "a red square moving to the right, on a blue background"}
PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "motions (mean)": tuple(itertools.combinations(MOTIONS, 2)),
    "left/right": (("left", "right"),),
    "up/down": (("up", "down"),),
    "grow/shrink": (("growing", "shrinking"),),
    "up/still": (("up", "still"),),
    "colour": (("right", "green (colour)"),),
    "shape": (("right", "square (shape)"),),
}


def captions() -> dict[str, str]:
    """The probed captions by name: one per motion, then the references."""
    return {**{m: SUBJECT.format(motion=MOTION_PHRASES[m]) for m in MOTIONS}, **REFERENCES}


def relative_distance(a, b) -> float:
    return float((a - b).norm() / ((a.norm() + b.norm()) / 2))


def pair_table(features: dict[str, dict[str, object]]) -> dict[str, dict[str, float]]:
    """For each place (layer): the mean relative distance of each pair group in ``PAIRS``."""
    table = {}
    for place, by_caption in features.items():
        table[place] = {group: sum(relative_distance(by_caption[a].flatten(), by_caption[b].flatten())
                                   for a, b in pairs) / len(pairs) for group, pairs in PAIRS.items()}
    return table


def measure(base: Path, lora: Path | None = None, timesteps: tuple[int, ...] = (900, 500), seed: int = 0):
    """(embedding norms by word, {place: {pair group: distance}}) for the base model (with a motion LoRA)."""
    import torch

    from tools.shapes_controlnet.train import load_base_parts, read_base

    _, text_encoder, tokenizer, unet = load_base_parts(read_base(base))
    if lora is not None:
        from modules.video.pipelines import MOTION_LORA_FILE

        unet.load_lora_adapter(str(lora), weight_name=MOTION_LORA_FILE, prefix="unet", adapter_name="motion")
    embeddings = text_encoder.get_input_embeddings().weight.detach()
    norms = {w: [round(float(embeddings[i].norm()), 3) for i in tokenizer(w, add_special_tokens=False).input_ids]
             for w in WORDS}
    named = captions()
    ids = tokenizer(list(named.values()), padding="max_length", max_length=77, truncation=True,
                    return_tensors="pt").input_ids
    outputs: dict[str, torch.Tensor] = {}
    hooks = [module.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out.detach()))
             for name, module in unet.named_modules() if name.endswith("attn2")]
    latent = torch.randn(1, unet.config.in_channels, 16, 16, generator=torch.Generator().manual_seed(seed))
    features: dict[str, dict[str, torch.Tensor]] = {}
    with torch.no_grad():
        hidden = text_encoder(ids)[0]
        features["text encoder"] = dict(zip(named, hidden, strict=True))
        for t in timesteps:
            outputs.clear()
            prediction = unet(latent.expand(len(named), -1, -1, -1), torch.full((len(named),), t), hidden).sample
            for name, value in [*outputs.items(), ("UNet output", prediction)]:
                short = name.replace(".transformer_blocks.0.attn2", "").replace("attentions.", "a")
                features[f"t={t} {short}"] = dict(zip(named, value, strict=True))
    for hook in hooks:
        hook.remove()
    return norms, pair_table(features)


def render(norms: dict[str, list[float]], table: dict[str, dict[str, float]]) -> str:
    lines = ["Input embedding norm by word (unused rows keep their random initial norm, about 0.16):",
             "  " + ", ".join(f"{w} {'/'.join(f'{n:.2f}' for n in ns)}" for w, ns in norms.items()), "",
             "Relative distance between captions that differ in one part (0 = the same features):", "",
             "| place | " + " | ".join(PAIRS) + " |", "|---|" + "---:|" * len(PAIRS)]
    lines += [f"| {place} | " + " | ".join(f"{row[g]:.3f}" for g in PAIRS) + " |" for place, row in table.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, default=Path("models/Stable-diffusion/sfumato-shapes"))
    parser.add_argument("--lora", type=Path, help="a motion model folder whose LoRA to load into the UNet")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    print(render(*measure(args.base, args.lora)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
