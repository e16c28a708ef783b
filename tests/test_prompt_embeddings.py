"""Long, weighted prompts on the tiny SD 1.x and SDXL pipelines (real CLIP tokenizer, random weights)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from modules.image.prompt_embeddings import (  # noqa: E402
    encode_prompt_pair,
    prompt_token_count,
    tokenize_chunks,
)
from tools.tiny_model import build_tiny_pipeline  # noqa: E402

LONG_PROMPT = " ".join(["cat"] * 200)  # 200 tokens -> chunks of 75, 75, 50


@pytest.fixture(scope="module", params=["sd1", "sdxl"])
def pipe(request):
    return build_tiny_pipeline(request.param, seed=0)


@pytest.fixture(scope="module")
def sd1():
    return build_tiny_pipeline("sd1", seed=0)


def diffusers_encode(pipe, prompt: str, negative: str, clip_skip: int | None = None) -> dict:
    """The pipeline's own encode_prompt, as keyword arguments."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        embeds = pipe.encode_prompt(
            prompt=prompt,
            device="cpu",
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=negative,
            clip_skip=clip_skip,
        )
        names = ["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
        return dict(zip(names, embeds, strict=True))
    embeds = pipe.encode_prompt(prompt, "cpu", 1, True, negative, clip_skip=clip_skip)
    return dict(zip(["prompt_embeds", "negative_prompt_embeds"], embeds, strict=True))


def assert_same(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key].shape == theirs[key].shape, key
        assert torch.allclose(ours[key], theirs[key], atol=1e-5), key


def test_plain_short_prompt_equals_the_pipelines_own_encoding(pipe):
    ours = encode_prompt_pair(pipe, "a photo of a red fox in the snow", "blurry, lowres")
    assert_same(ours, diffusers_encode(pipe, "a photo of a red fox in the snow", "blurry, lowres"))


def test_clip_skip_follows_a1111_numbering(pipe):
    ours = encode_prompt_pair(pipe, "a red fox", "", clip_skip=2)
    default = encode_prompt_pair(pipe, "a red fox", "", clip_skip=1)
    assert not torch.allclose(ours["prompt_embeds"], default["prompt_embeds"])
    if getattr(pipe, "text_encoder_2", None) is not None:
        # A1111's clip skip 2 is diffusers' clip_skip=1 (diffusers applies it to the prompt only, not the negative)
        theirs = diffusers_encode(pipe, "a red fox", "", clip_skip=1)
        for key in ("prompt_embeds", "pooled_prompt_embeds"):
            assert torch.allclose(ours[key], theirs[key], atol=1e-5), key
    else:
        # SD 1.x: the penultimate layer through the final layer norm, as A1111 does
        ids = pipe.tokenizer("a red fox", padding="max_length", max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            output = pipe.text_encoder(ids, output_hidden_states=True)
            norm = getattr(pipe.text_encoder, "text_model", pipe.text_encoder).final_layer_norm
            expected = norm(output.hidden_states[-2])
        assert torch.allclose(ours["prompt_embeds"], expected, atol=1e-5)
    empty = encode_prompt_pair(pipe, "", "a red fox", clip_skip=2)
    assert torch.allclose(empty["negative_prompt_embeds"], ours["prompt_embeds"], atol=1e-5)


def test_long_prompt_makes_three_chunks_and_the_negative_follows(pipe):
    out = encode_prompt_pair(pipe, LONG_PROMPT, "blurry")
    width = 128 if getattr(pipe, "text_encoder_2", None) is not None else 64
    assert out["prompt_embeds"].shape == (1, 231, width)
    assert out["negative_prompt_embeds"].shape == (1, 231, width)
    # the negative's first chunk is "blurry", the rest are empty chunks
    empty = encode_prompt_pair(pipe, "", "")["prompt_embeds"]
    short = encode_prompt_pair(pipe, "blurry", "")["prompt_embeds"]
    negative = out["negative_prompt_embeds"]
    assert torch.allclose(negative[:, :77], short, atol=1e-5)
    assert torch.allclose(negative[:, 77:154], empty, atol=1e-5)
    assert torch.allclose(negative[:, 154:], empty, atol=1e-5)
    # and a long negative pads the prompt instead
    flipped = encode_prompt_pair(pipe, "blurry", LONG_PROMPT)
    assert flipped["prompt_embeds"].shape[1] == 231
    assert torch.allclose(flipped["prompt_embeds"], negative, atol=1e-5)


def test_sdxl_pooled_comes_from_the_first_chunk():
    pipe = build_tiny_pipeline("sdxl", seed=0)
    long = encode_prompt_pair(pipe, "a red fox BREAK in the snow", "")
    first = encode_prompt_pair(pipe, "a red fox", "")
    assert long["prompt_embeds"].shape[1] == 154
    assert torch.allclose(long["pooled_prompt_embeds"], first["pooled_prompt_embeds"], atol=1e-6)
    assert long["negative_pooled_prompt_embeds"].shape == (1, 64)


def test_weights_change_the_embedding(pipe):
    plain = encode_prompt_pair(pipe, "a red ball", "")["prompt_embeds"]
    weighted = encode_prompt_pair(pipe, "a (red:1.5) ball", "")["prompt_embeds"]
    unit = encode_prompt_pair(pipe, "a (red:1.0) ball", "")["prompt_embeds"]
    assert not torch.allclose(plain, weighted)
    assert torch.allclose(plain, unit)
    # the weighted token moves most; the others only by the mean-restoring rescale
    red_position = 2  # BOS, "a", "red"
    change = (weighted - plain).abs().mean(dim=-1)[0]
    assert int(change.argmax()) == red_position


def test_emphasis_restores_the_chunk_mean_like_a1111():
    from modules.image.prompt_embeddings import _emphasise

    generator = torch.Generator().manual_seed(0)
    z = torch.randn(2, 77, 16, generator=generator) + 0.5
    weights = torch.ones(2, 77)
    weights[0, 3] = 1.5
    weights[1, 5:9] = 0.5
    out = _emphasise(z, weights)
    expected = z * weights[:, :, None]
    expected = expected * (z.mean(dim=(1, 2), keepdim=True) / expected.mean(dim=(1, 2), keepdim=True))
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(out.mean(dim=(1, 2)), z.mean(dim=(1, 2)), atol=1e-6)
    # a zero-mean chunk (layer norm without bias, as in random tiny encoders): the ratio would be noise, so the
    # weights apply unscaled instead of multiplying the embedding by an arbitrary factor
    centred = z - z.mean(dim=-1, keepdim=True)
    out = _emphasise(centred, weights)
    assert torch.allclose(out, centred * weights[:, :, None], atol=1e-6)
    half = _emphasise(z.half(), weights)
    assert half.dtype == torch.float16 and torch.allclose(half.float(), _emphasise(z, weights), atol=1e-2)


def test_break_starts_a_new_chunk(pipe):
    out = encode_prompt_pair(pipe, "a red fox BREAK in the snow", "")
    assert out["prompt_embeds"].shape[1] == 154
    first = encode_prompt_pair(pipe, "a red fox", "")["prompt_embeds"]
    second = encode_prompt_pair(pipe, "in the snow", "")["prompt_embeds"]
    assert torch.allclose(out["prompt_embeds"][:, :77], first, atol=1e-5)
    assert torch.allclose(out["prompt_embeds"][:, 77:], second, atol=1e-5)


def test_num_images_repeats_the_batch(pipe):
    out = encode_prompt_pair(pipe, "a fox", "a dog", num_images=3)
    assert all(value.shape[0] == 3 for value in out.values())
    assert torch.equal(out["prompt_embeds"][0], out["prompt_embeds"][2])


def test_pipeline_runs_with_the_returned_kwargs(pipe):
    kwargs = encode_prompt_pair(pipe, LONG_PROMPT + ", (red:1.3) [blue] BREAK tail", "blurry, lowres")
    generator = torch.Generator().manual_seed(0)
    images = pipe(**kwargs, num_inference_steps=2, guidance_scale=7.0, width=64, height=64, generator=generator).images
    assert len(images) == 1 and images[0].size == (64, 64)


def test_img2img_pipeline_accepts_them_too(sd1):
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image

    img2img = StableDiffusionImg2ImgPipeline(**sd1.components)
    kwargs = encode_prompt_pair(img2img, "a (red:1.2) fox", "", clip_skip=2, num_images=2)
    images = img2img(**kwargs, image=Image.new("RGB", (64, 64), "gray"), strength=0.5, num_inference_steps=2).images
    assert len(images) == 2


def test_runs_in_the_text_encoders_dtype():
    pipe = build_tiny_pipeline("sd1", seed=1)
    pipe.text_encoder.to(torch.bfloat16)
    out = encode_prompt_pair(pipe, "a (red:1.4) fox", "dog")
    assert out["prompt_embeds"].dtype == torch.bfloat16
    assert out["prompt_embeds"].device == pipe.text_encoder.device


# --- chunking (tokenizer only) ---------------------------------------------------------------------------------


def test_chunks_cut_at_a_nearby_comma(sd1):
    tokenizer = sd1.tokenizer
    prompt = " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10)
    chunks = tokenize_chunks(tokenizer, prompt)
    assert [len(chunk.tokens) for chunk in chunks] == [71, 10]  # 70 cats and the comma, then the dogs together
    assert chunks[0].tokens[-1] == tokenizer(",", add_special_tokens=False)["input_ids"][0]
    assert [len(chunk.tokens) for chunk in tokenize_chunks(tokenizer, prompt, backtrack=0)] == [75, 6]
    far = " ".join(["cat"] * 50) + ", " + " ".join(["dog"] * 30)  # comma 25 tokens back: too far to move
    assert [len(chunk.tokens) for chunk in tokenize_chunks(tokenizer, far)] == [75, 6]


def test_chunk_weights_and_breaks(sd1):
    tokenizer = sd1.tokenizer
    chunks = tokenize_chunks(tokenizer, "a (red:1.5) fox BREAK BREAK [blue]")
    assert [len(chunk.tokens) for chunk in chunks] == [3, 0, 1]
    assert chunks[0].weights == [1.0, 1.5, 1.0]
    assert chunks[2].weights == [pytest.approx(1 / 1.1)]
    assert [len(chunk.tokens) for chunk in tokenize_chunks(tokenizer, "")] == [0]
    assert [len(chunk.tokens) for chunk in tokenize_chunks(tokenizer, "BREAK a")] == [0, 1]
    assert [len(chunk.tokens) for chunk in tokenize_chunks(tokenizer, "a BREAK")] == [1]
    assert [len(chunk.tokens) for chunk in tokenize_chunks(tokenizer, " ".join(["cat"] * 150))] == [75, 75]


def test_token_count(sd1):
    assert prompt_token_count(sd1.tokenizer, "a red fox") == (3, 75)
    assert prompt_token_count(sd1.tokenizer, LONG_PROMPT) == (200, 225)
