"""The Train tab's demonstration: teach sfumato-shapes a heart, a shape it has never seen, from 5 pictures bound to
the rare token "sks", and measure what it learnt with a pixel checker.

1. Five 64 x 64 hearts in the shapes world's palette and drawing (centred, large), captioned
   "a <colour> sks on a <background> background".
2. A LoRA trained on them through the studio's train kind (with prior preservation on the class prompt, or
   without: ``--no-prior``), timed.
3. ``--prompts`` prompts "a <colour> sks on a <background> background" with colour pairs absent from the five (51
   pairs at seed 1, then at seed 2):
   the heart counts as drawn when its template IoU (the measured object against each outline drawn into the
   object's box, as tools/shapes/metrics does for the four known shapes) beats circle, square, triangle and star;
   the colours when the measured foreground and background are the asked ones.
4. The four known shapes on held-out prompts of the base's own world (its rows) with and without the LoRA, so
   forgetting shows.

Usage (the recipe that meets the targets; about 10 minutes with the evaluation):
    python -m bench.eval_training --out /tmp/heart --threads 2 --steps 2400 --embedding-lr 5e-2 --prompts 100 \
        --prior-target base_model --class-prompt training-captions --class-images 200 --prior-weight 3
    python -m bench.eval_training --out /tmp/heart-noprior --threads 2 --steps 2400 --embedding-lr 5e-2 \
        --prompts 100 --no-prior --no-base
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tools.shapes import dataset as world
from tools.shapes import metrics

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "models" / "Stable-diffusion" / "sfumato-shapes"
TRAIN_PAIRS = (("red", "blue"), ("yellow", "green"), ("white", "purple"), ("black", "orange"), ("blue", "yellow"))


def heart_polygon(points: int = 64) -> list[tuple[float, float]]:
    """The classic parametric heart in its unit box (x right, y down)."""
    xs, ys = [], []
    for k in range(points):
        t = 2 * math.pi * k / points
        xs.append(16 * math.sin(t) ** 3)
        ys.append(-(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)))
    x0, y0, w, h = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    return [((x - x0) / w, (y - y0) / h) for x, y in zip(xs, ys, strict=True)]


def heart_mask(box: tuple[float, float, float, float], size: int = world.IMAGE_SIZE) -> np.ndarray:
    """Coverage of a heart filling ``box``, drawn like ``world.draw_mask`` (supersampled, box-filtered)."""
    big = size * world.SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    left, top, right, bottom = (value * world.SUPERSAMPLE for value in box)
    ImageDraw.Draw(canvas).polygon([(left + x * (right - left), top + y * (bottom - top))
                                    for x, y in heart_polygon()], fill=255)
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0


def heart_picture(colour: str, background: str, side: float = 34.0) -> Image.Image:
    centre = world.IMAGE_SIZE / 2
    box = (centre - side / 2, centre - side / 2, centre + side / 2, centre + side / 2)
    coverage = heart_mask(box)[..., None]
    back, fore = (np.asarray(world.PALETTE[name], dtype=np.float32) for name in (background, colour))
    return Image.fromarray(np.clip(np.rint(back + coverage * (fore - back)), 0, 255).astype(np.uint8))


def heart_score(image: Image.Image) -> tuple[bool, metrics.Reading, float]:
    """(the heart beats the four known outlines, the reading, the heart's IoU)."""
    reading = metrics.measure(image)
    if not reading.found or reading.box is None:
        return False, reading, 0.0
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    background = np.asarray(world.PALETTE[reading.background], dtype=np.float32)
    foreground = np.asarray(world.PALETTE[reading.foreground], dtype=np.float32)
    axis = foreground - background
    region = ((pixels - background) @ axis / max(float(axis @ axis), 1e-6)) > 0.5
    template = heart_mask(reading.box, image.width) > 0.5
    union = np.logical_or(template, region).sum()
    heart = float(np.logical_and(template, region).sum() / union) if union else 0.0
    return heart > max(reading.shape_scores.values(), default=0.0), reading, heart


def known_shape_prompts(count: int) -> str:
    """The class "shape" as the base model knows it: its four shapes, named, in the grammar the hearts' captions use
    ("a <colour> <shape> on a <colour> background"), one prompt per line, cycling shapes and colour pairs."""
    pairs = [(c, b) for c in world.COLOURS for b in world.COLOURS if c != b]
    rng = np.random.default_rng(7)
    order = rng.permutation(len(pairs))
    chosen = [(pairs[order[k % len(pairs)]], world.SHAPES[k % len(world.SHAPES)]) for k in range(count)]
    return "\n".join(f"{world.article(colour)} {colour} {shape} on {world.article(background)} {background} background"
                     for (colour, background), shape in chosen)


def base_rows(base: Path = BASE) -> int:
    """The rows of the world the base model was trained on (its ``training_config.json``): the known shapes are
    asked only at positions it knows (sfumato-shapes knows 1 row: left, centre, right)."""
    config = base / "training_config.json"
    return int(json.loads(config.read_text(encoding="utf-8")).get("rows", 3)) if config.exists() else 3


def training_class_specs(count: int) -> list[world.ShapeSpec]:
    """Combinations the base model was trained on (never the held-out ones the evaluation uses), in a fixed order."""
    specs = world.training_specs(base_rows())
    order = np.random.default_rng(11).permutation(len(specs))
    return [specs[int(order[k % len(specs)])] for k in range(count)]


def training_caption_prompts(count: int) -> str:
    """The class "shape" as the known-shapes evaluation asks for it: full captions (size, colour, shape, position,
    background) of the base's training combinations, one per line."""
    return "\n".join(spec.caption() for spec in training_class_specs(count))


def checked_class_folder(services, folder: Path, count: int) -> int:
    """Class pictures the base model draws right: ``count`` full training captions generated as the trainer would
    (64 px, 20 steps, seeds 0..), kept only where the pixel checker reads every asked attribute, written with
    their captions into ``folder`` (the request's ``class_data_dir``). Returns how many were kept."""
    from modules.image.request import GenerationRequest

    folder.mkdir(parents=True, exist_ok=True)
    kept = 0
    for index, spec in enumerate(training_class_specs(count)):
        picture = services.run(GenerationRequest(prompt=spec.caption(), width=world.IMAGE_SIZE,
                                                 height=world.IMAGE_SIZE, steps=20, seed=index, save_images=False,
                                                 make_grid=False)).images[0].image
        if all(metrics.score(picture, spec).values()):
            picture.save(folder / f"class-{index:04d}.png")
            (folder / f"class-{index:04d}.txt").write_text(spec.caption(), encoding="utf-8")
            kept += 1
    return kept


def heart_caption(colour: str, background: str) -> str:
    """The grammar's caption with the rare token where the shape's name goes."""
    return f"{world.article(colour)} {colour} sks on {world.article(background)} {background} background"


def eval_pairs(count: int) -> list[tuple[str, str, int]]:
    """``count`` (colour, background, seed) prompts: the 51 colour pairs absent from the five pictures in a fixed
    order, then again with the next seed, so asking for more than 51 prompts never repeats one."""
    pairs = [(c, b) for c in world.COLOURS for b in world.COLOURS if c != b and (c, b) not in TRAIN_PAIRS]
    order = np.random.default_rng(7).permutation(len(pairs))
    return [(*pairs[int(order[k % len(pairs)])], 1 + k // len(pairs)) for k in range(count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--class-images", type=int, default=40)
    parser.add_argument("--class-prompt", default="known-shapes",
                        help='"known-shapes" (default): the base model\'s four shapes in the captions\' grammar, one '
                             'prompt per class image; "training-captions": full captions (size and position too) '
                             'of the base\'s training combinations; anything else is used as the class prompt')
    parser.add_argument("--checked-class-images", action="store_true",
                        help="class pictures: --class-images of the base's training captions, kept only where the "
                             "pixel checker reads what was asked (given to the trainer as class_data_dir)")
    parser.add_argument("--no-prior", action="store_true")
    parser.add_argument("--prior-weight", type=float, default=1.0)
    parser.add_argument("--prior-target", choices=("images", "base_model"), default="images",
                        help="the class half's target: the class pictures, or the base model's own prediction")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--text-encoder", action="store_true", help="also train a LoRA on the text encoder")
    parser.add_argument("--embedding-lr", type=float, default=0.0,
                        help="pivotal tuning: also train the token's embedding at this rate (0: the LoRA alone)")
    parser.add_argument("--token-init", default="", help="pivotal tuning: the word the token's embedding starts "
                                                          "from (default: the token's own)")
    parser.add_argument("--targets", default="", help="the LoRA's UNet layers, comma-separated (default: every "
                                                        "attention projection); e.g. attn2.to_k,attn2.to_v")
    parser.add_argument("--name", default="", help="the LoRA's name (default heart / heart-noprior)")
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--known", type=int, default=256, help="held-out prompts of the four known shapes")
    parser.add_argument("--no-base", action="store_true",
                        help="skip the base model's known-shapes figure (the same in every run; measure it once)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from modules.image.request import GenerationRequest
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services
    from modules.training.request import TrainRequest

    models = args.out / "models"
    if not (models / "Stable-diffusion" / "sfumato-shapes").exists():
        (models / "Stable-diffusion").mkdir(parents=True, exist_ok=True)
        shutil.copytree(BASE, models / "Stable-diffusion" / "sfumato-shapes")
    images = args.out / "hearts"
    images.mkdir(parents=True, exist_ok=True)
    for index, (colour, background) in enumerate(TRAIN_PAIRS):
        heart_picture(colour, background).save(images / f"heart-{index}.png")
        (images / f"heart-{index}.txt").write_text(heart_caption(colour, background), encoding="utf-8")
    services = build_services(AppConfig(models_dir=models, data_dir=args.out / "data", outdir=args.out / "outputs",
                                        default_ckpt="sfumato-shapes"))
    services.start()
    name = args.name or ("heart-noprior" if args.no_prior else "heart")
    class_prompt = {"known-shapes": known_shape_prompts, "training-captions": training_caption_prompts}.get(
        args.class_prompt, lambda _count: args.class_prompt)(args.class_images)
    try:
        class_dir, kept, checking = None, None, time.perf_counter()
        if args.checked_class_images and not args.no_prior:
            class_dir = args.out / "class-checked"
            shutil.rmtree(class_dir, ignore_errors=True)
            kept = checked_class_folder(services, class_dir, args.class_images)
            print(f"class pictures drawn right: {kept} of {args.class_images}", flush=True)
        class_minutes = (time.perf_counter() - checking) / 60
        started = time.perf_counter()
        result = services.run(TrainRequest(
            output_name=name, data_dir=str(images), instance_prompt="a sks", rare_token="sks", resolution=64,
            steps=args.steps, learning_rate=args.lr, lora_rank=args.rank, lora_alpha=args.rank, seed=0,
            prior_preservation=not args.no_prior, class_prompt="" if class_dir else class_prompt,
            class_data_dir=str(class_dir) if class_dir else None,
            num_class_images=args.class_images, prior_loss_weight=args.prior_weight,
            prior_target=args.prior_target, batch_size=args.batch_size,
            train_text_encoder=args.text_encoder, train_token_embedding=args.embedding_lr > 0,
            embedding_learning_rate=args.embedding_lr or 5e-3, token_init_text=args.token_init,
            **({"lora_targets": tuple(t.strip() for t in args.targets.split(",") if t.strip())}
               if args.targets else {}),
            checkpoint_every=max(1, args.steps // 4), resume=False),
            timeout=None)
        minutes = (time.perf_counter() - started) / 60
        hits, colours, ious = 0, 0, []
        grid = []
        cases = eval_pairs(args.prompts)
        for colour, background, seed in cases:
            prompt = f"{heart_caption(colour, background)} <lora:{name}:1>"
            picture = services.run(GenerationRequest(prompt=prompt, seed=seed, save_images=False,
                                                     make_grid=False)).images[0].image
            grid.append(picture)
            drawn, reading, iou = heart_score(picture)
            hits += drawn
            colours += reading.foreground == colour and reading.background == background
            ious.append(iou)
        known = {}
        known["base"] = None
        specs = world.evaluation_cases(args.known, rows=base_rows())
        for label, suffix in (("base", ""), ("with LoRA", f" <lora:{name}:1>"))[1 if args.no_base else 0:]:
            right = 0
            for spec, seed in specs:
                picture = services.run(GenerationRequest(prompt=spec.caption() + suffix, seed=seed,
                                                         save_images=False, make_grid=False)).images[0].image
                right += metrics.score(picture, spec)["shape"]
            known[label] = right / len(specs)
    finally:
        services.stop()
    report = {"lora": str(result.output), "train_minutes": round(minutes, 2),
              "class_check_minutes": round(class_minutes, 2), "steps": args.steps,
              "prior_preservation": not args.no_prior,
              "settings": {"rank": args.rank, "lr": args.lr, "batch_size": args.batch_size,
                           "prior_weight": args.prior_weight, "prior_target": args.prior_target,
                           "text_encoder": args.text_encoder,
                           "class_images": args.class_images, "checked_class_images": kept,
                           "class_prompt": args.class_prompt, "embedding_lr": args.embedding_lr,
                           "token_init": args.token_init, "targets": args.targets or "all attention"},
              "prompts": len(cases), "heart": hits / len(cases),
              "colours": colours / len(cases), "mean_heart_iou": float(np.mean(ious)),
              "known_shapes_base": known["base"], "known_shapes_with_lora": known["with LoRA"],
              "final_loss": result.losses[-1] if result.losses else None}
    print(json.dumps(report, indent=2))
    (args.out / f"{name}-report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
