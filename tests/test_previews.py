"""Live previews from the latents: the cheap map shows the picture's colours, on the embedded model's real
autoencoder, and a job with previews on reports them at the output's size either way."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.runtime.config import ROOT
from tests.helpers import txt2img

MODEL_DIR = ROOT / "models" / "Stable-diffusion" / "sfumato-shapes"


@pytest.fixture(scope="module")
def shapes_pipe(one_thread):
    if not (MODEL_DIR / "model_index.json").is_file():
        pytest.skip("the embedded model is not in models/")
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(str(MODEL_DIR), local_files_only=True)


def scene(background, colour) -> Image.Image:
    image = Image.new("RGB", (64, 64), background)
    ImageDraw.Draw(image).ellipse((20, 12, 52, 44), fill=colour)
    return image


def latents_of(pipe, image: Image.Image):
    import torch

    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    with torch.inference_mode():
        return pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor


@pytest.mark.parametrize(("background", "colour"), [((35, 70, 225), (220, 30, 30)), ((20, 20, 20), (250, 225, 40)),
                                                    ((30, 170, 50), (245, 245, 245))])
def test_the_cheap_preview_shows_the_picture_colours(shapes_pipe, background, colour):
    from modules.image.generation import _decode
    from modules.image.previews import LatentPreviewer

    image = scene(background, colour)
    preview = LatentPreviewer().preview(shapes_pipe, latents_of(shapes_pipe, image), decode=_decode)
    assert preview.size == image.size
    got, want = np.asarray(preview, dtype=np.float32), np.asarray(image, dtype=np.float32)
    assert np.abs(got[2:10, 2:10].mean(axis=(0, 1)) - np.array(background)).max() < 40  # the background
    assert np.abs(got[26:30, 34:38].mean(axis=(0, 1)) - np.array(colour)).max() < 60  # the shape's middle
    assert np.abs(got - want).mean() < 25


def test_an_autoencoder_the_map_cannot_follow_is_decoded_in_full(shapes_pipe):
    from modules.image.previews import LatentPreviewer

    previewer = LatentPreviewer()
    fitted = previewer.fit_for(shapes_pipe.vae)
    assert not fitted.usable  # the embedded model's small autoencoder folds colours nonlinearly
    assert previewer.fit_for(shapes_pipe.vae) is fitted  # fitted once per autoencoder


def test_where_the_map_follows_the_decoder_the_preview_is_the_cheap_one(one_thread):
    import torch

    from modules.image.generation import _decode
    from modules.image.previews import LatentPreviewer
    from tools.tiny_model import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd1", seed=0)
    previewer = LatentPreviewer()
    assert previewer.fit_for(pipe.vae).usable
    latents = latents_of(pipe, scene((35, 70, 225), (220, 30, 30)))
    calls = []
    cheap = previewer.preview(pipe, latents, decode=lambda *args: calls.append(args))
    assert not calls and cheap.size == (64, 64)
    with torch.inference_mode():
        full = _decode(pipe, latents)[0]
    def blocks(image):  # the latent grid's resolution: what a linear map can show
        return np.asarray(image, np.float32).reshape(8, 8, 8, 8, 3).mean(axis=(1, 3))

    assert np.abs(blocks(cheap) - blocks(full)).mean() < 15


@pytest.mark.parametrize("method", ["approximate", "full"])
def test_a_generation_reports_previews_of_the_output_size(services, method):
    from modules.image.generation import generate
    from modules.jobs.control import JobControl

    previews = []
    control = JobControl(on_progress=lambda progress: previews.append(progress.current_preview()),
                         preview_interval=1, preview_method=method)
    result = generate(txt2img(steps=4, width=64, height=48, save_images=False), services.engine, control)
    shown = [image for image in previews if image is not None]
    assert len(shown) >= 3 and all(image.size == (64, 48) for image in shown)
    assert result.images[0].image.size == (64, 48)


def test_a_job_nobody_watches_makes_no_previews(services, monkeypatch):
    import modules.image.generation as generation
    from modules.jobs.control import JobControl

    made = []
    real = generation._preview
    monkeypatch.setattr(generation, "_preview", lambda *args: made.append(1) or real(*args))
    offered = []
    control = JobControl(on_progress=lambda progress: offered.append(progress.has_preview), preview_interval=1)
    generation.generate(txt2img(steps=4, width=64, height=64, save_images=False), services.engine, control)
    assert any(offered) and not made  # offered every step, made never
    control = JobControl(on_progress=lambda progress: progress.current_preview(), preview_interval=1)
    generation.generate(txt2img(steps=4, width=64, height=64, save_images=False), services.engine, control)
    assert len(made) == 4
