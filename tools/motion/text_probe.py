"""How far apart the base model keeps the motion captions: what the motion modules can read of the asked motion.

The motion modules are temporal self-attention; the caption reaches them only through the text encoder and the
UNet's spatial cross-attention. This measures, with no training, the relative distance ``|a - b| / mean(|a|, |b|)``
between the features of captions that differ only in the motion phrase (and, for scale, in a colour or a shape
word) at three places: the text encoder's output (77 x width), the output of each spatial cross-attention of the
UNet (one fixed noisy latent, at a high and a middle timestep), and the UNet's prediction. Also the norm of each
word's input embedding: rows of words the base never saw keep their random initial norm.

Distance is not readability: what a motion module can use is a feature that tells two motions apart the same way
whatever the colours, shape and noise. ``--readable`` measures that: per pixel, the output of each spatial
transformer of the UNet (what the motion module after it reads) for captions of two motions over many
(shape, colour, background) combinations and noises; a linear classifier (ridge regression) fitted on the pixels of
two thirds of the combinations tells the motions apart on the pixels of the rest; its accuracy is reported (50 %:
unreadable). Usage::

    python -m tools.motion.text_probe [--base models/Stable-diffusion/sfumato-shapes] [--lora MOTION_MODEL_DIR]
                                      [--readable]

``--lora`` measures the UNet with the LoRA a motion model ships (``pytorch_lora_weights.safetensors``) loaded, its
text-encoder part too where it has one.
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

    text_encoder, tokenizer, unet = _load(base, lora)
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


READABLE_PAIRS: tuple[tuple[str, str], ...] = (("left", "right"), ("up", "down"), ("growing", "shrinking"),
                                               ("up", "still"))


def _load(base: Path, lora: Path | None):
    from tools.shapes_controlnet.train import load_base_parts, read_base

    _, text_encoder, tokenizer, unet = load_base_parts(read_base(base))
    if lora is not None:
        from safetensors.torch import load_file

        from modules.video.pipelines import MOTION_LORA_FILE, inject_motion_text_lora, text_encoder_part

        unet.load_lora_adapter(str(lora), weight_name=MOTION_LORA_FILE, prefix="unet", adapter_name="motion")
        text = text_encoder_part(load_file(str(Path(lora) / MOTION_LORA_FILE)))
        if text:  # a text-encoder part (``text_lora_rank``) reads the caption before the UNet does
            inject_motion_text_lora(text_encoder, text)
    return text_encoder, tokenizer, unet


def readability(base: Path, lora: Path | None = None, combinations: int = 48, timestep: int = 700,
                seed: int = 0) -> dict[str, dict[str, float]]:
    """{spatial transformer: {motion pair: held-out accuracy of a per-pixel linear classifier}} (see above)."""
    import re

    import numpy as np
    import torch

    from tools.motion.clips import ClipSpec
    from tools.shapes import dataset as world

    text_encoder, tokenizer, unet = _load(base, lora)
    rng = np.random.default_rng(seed)
    combos = [(s, c, b) for s in world.SHAPES for c in world.COLOURS for b in world.COLOURS if b != c]
    picked = [combos[i] for i in rng.permutation(len(combos))[:combinations]]
    outputs: dict[str, torch.Tensor] = {}
    hooks = [module.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out[0].detach()))
             for name, module in unet.named_modules() if re.fullmatch(r".*attentions\.\d+", name)]
    generator = torch.Generator().manual_seed(seed)
    features: dict[str, dict[str, list]] = {}
    motions = sorted({m for pair in READABLE_PAIRS for m in pair})
    with torch.no_grad():
        for shape, colour, background in picked:
            texts = [ClipSpec(shape, colour, background, m).caption() for m in motions]
            ids = tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            latent = torch.randn(1, unet.config.in_channels, 16, 16, generator=generator)
            unet(latent.expand(len(motions), -1, -1, -1), torch.full((len(motions),), timestep), text_encoder(ids)[0])
            for place, value in outputs.items():
                for motion, per_motion in zip(motions, value, strict=True):
                    features.setdefault(place, {}).setdefault(motion, []).append(per_motion.flatten(1).T)
    for hook in hooks:
        hook.remove()
    split = 2 * combinations // 3
    table: dict[str, dict[str, float]] = {}
    for place, by_motion in features.items():
        row = {}
        for a, b in READABLE_PAIRS:
            fit = [torch.cat(by_motion[m][:split]) for m in (a, b)]
            test = [torch.cat(by_motion[m][split:]) for m in (a, b)]
            x = torch.cat(fit)
            mean, std = x.mean(0), x.std(0) + 1e-6
            x = torch.cat([(x - mean) / std, torch.ones(len(x), 1)], dim=1)
            y = torch.cat([torch.ones(len(fit[0])), -torch.ones(len(fit[1]))])
            w = torch.linalg.solve(x.T @ x + 1.0 * torch.eye(x.shape[1]), x.T @ y)
            right = sum(int(((torch.cat([(t - mean) / std, torch.ones(len(t), 1)], 1) @ w) * sign > 0).sum())
                        for t, sign in zip(test, (1, -1), strict=True))
            row[f"{a}/{b}"] = right / sum(len(t) for t in test)
        table[place] = row
    return table


def render_readability(table: dict[str, dict[str, float]]) -> str:
    pairs = list(next(iter(table.values())))
    lines = ["Held-out accuracy of a per-pixel linear classifier on the spatial transformers' outputs (50 %: "
             "the motion modules cannot read the pair there):", "",
             "| transformer | " + " | ".join(pairs) + " |", "|---|" + "---:|" * len(pairs)]
    lines += [f"| {place} | " + " | ".join(f"{100 * row[p]:.0f} %" for p in pairs) + " |"
              for place, row in table.items()]
    return "\n".join(lines)


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
    parser.add_argument("--readable", action="store_true", help="also the linear readability of motion pairs")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    print(render(*measure(args.base, args.lora)))
    if args.readable:
        print()
        print(render_readability(readability(args.base, args.lora)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
