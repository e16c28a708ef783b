"""Infotext: A1111's exact text, parsing it back, and carrying it inside PNG, JPEG and WEBP files."""

from __future__ import annotations

import json
import struct

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from modules.image.infotext import (
    decode_user_comment,
    embed_infotext,
    encode_user_comment,
    format_infotext,
    format_value,
    infotext_to_exif,
    infotext_to_request_fields,
    parse_infotext,
    read_image_info,
    read_infotext,
    save_image_with_infotext,
    split_sampler,
)

REFERENCE_PARAMS = {
    "Steps": 20,
    "Sampler": "DPM++ 2M",
    "Schedule type": "Karras",
    "CFG scale": 7.0,
    "Seed": 1234,
    "Size": "512x768",
    "Model hash": "6ce0161689",
    "Model": "v1-5-pruned-emaonly",
}
REFERENCE_LINE = (
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly"
)


def base(**extra: object) -> dict[str, object]:
    return {"Steps": 20, "Sampler": "Euler a", "CFG scale": 7, "Seed": 1, "Size": "512x512", **extra}


# --- format ---------------------------------------------------------------------------------------------------


def test_reference_example_is_reproduced_exactly():
    text = format_infotext("a castle on a hill", "blurry, lowres", {**REFERENCE_PARAMS, "Version": "v1.10.1"})
    assert text == f"a castle on a hill\nNegative prompt: blurry, lowres\n{REFERENCE_LINE}, Version: v1.10.1"


def test_negative_line_only_when_not_empty():
    assert format_infotext("cat", "", REFERENCE_PARAMS) == f"cat\n{REFERENCE_LINE}"
    assert format_infotext("", "", REFERENCE_PARAMS) == REFERENCE_LINE
    assert format_infotext("", "ugly", REFERENCE_PARAMS) == f"Negative prompt: ugly\n{REFERENCE_LINE}"


def test_keys_follow_a1111_order_whatever_the_insertion_order():
    params = {
        "Version": "v1",
        "Hires upscaler": "Latent",
        "Clip skip": 2,
        "Denoising strength": 0.7,
        "Variation seed strength": 0.25,
        "Variation seed": 99,
        "VAE": "vae-ft-mse",
        "VAE hash": "735e4c3a44",
        "Model": "m",
        "Model hash": "h",
        "Size": "64x64",
        "Seed": 5,
        "CFG scale": 7.5,
        "Schedule type": "Karras",
        "Sampler": "DPM++ 2M",
        "Steps": 4,
        "Hires upscale": 2.0,
    }
    line = format_infotext("p", "", params)
    keys = [part.split(":")[0] for part in line.splitlines()[-1].split(", ")]
    assert keys == [
        "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model", "VAE hash", "VAE",
        "Variation seed", "Variation seed strength", "Denoising strength", "Clip skip", "Hires upscaler",
        "Hires upscale", "Version",
    ]  # fmt: skip


def test_none_values_and_clip_skip_one_are_left_out():
    line = format_infotext("p", "", base(**{"Model hash": None, "Clip skip": 1, "VAE": None}))
    assert "Model hash" not in line and "Clip skip" not in line and "VAE" not in line
    assert "Clip skip: 2" in format_infotext("p", "", base(**{"Clip skip": 2}))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (7.0, "7"),
        (7.5, "7.5"),
        (0.75, "0.75"),
        (0.1, "0.1"),
        (20, "20"),
        ((512, 768), "512x768"),
        ("plain", "plain"),
        ("a, b", '"a, b"'),
        ("key: value", '"key: value"'),
        ("two\nlines", '"two\\nlines"'),
        ('say "hi", ok', '"say \\"hi\\", ok"'),
        ('"quoted"', '"\\"quoted\\""'),
        ("日本, 語", '"日本, 語"'),
        (["a", "b"], '"[\\"a\\", \\"b\\"]"'),
    ],
)
def test_values_are_formatted_like_a1111(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize("missing", ["Steps", "Sampler", "CFG scale", "Seed", "Size"])
def test_required_keys(missing):
    params = base()
    del params[missing]
    with pytest.raises(ValueError, match=missing):
        format_infotext("p", "", params)
    with pytest.raises(ValueError):
        format_infotext("p", "", {**base(), missing: None})


def test_keys_that_cannot_be_parsed_back_are_refused():
    with pytest.raises(ValueError):
        format_infotext("p", "", base(**{"bad, key": 1}))


# --- parse ----------------------------------------------------------------------------------------------------


def test_parse_reference_example():
    parsed = parse_infotext(f"a castle\nNegative prompt: blurry, lowres\n{REFERENCE_LINE}")
    assert parsed == {
        "Prompt": "a castle",
        "Negative prompt": "blurry, lowres",
        "Steps": "20",
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "CFG scale": "7",
        "Seed": "1234",
        "Size": "512x768",
        "Size-1": "512",
        "Size-2": "768",
        "Model hash": "6ce0161689",
        "Model": "v1-5-pruned-emaonly",
    }


def test_text_without_a_parameter_line_is_all_prompt():
    parsed = parse_infotext("just a prompt\nwith: two, lines")
    assert parsed == {"Prompt": "just a prompt\nwith: two, lines", "Negative prompt": ""}


def test_windows_line_endings_and_multi_line_negative():
    parsed = parse_infotext("cat\r\nNegative prompt: ugly\r\nbad hands\r\nSteps: 5, Sampler: Euler, CFG scale: 7")
    assert parsed["Prompt"] == "cat"
    assert parsed["Negative prompt"] == "ugly\nbad hands"
    assert parsed["Steps"] == "5"


ROUND_TRIP_CASES = [
    ("a cat", ""),
    ("a cat", "blurry"),
    ("", "only negative"),
    ("line one\nline two\n\nline four", "neg one\nneg two"),
    ("a prompt\nSteps: 3, Sampler: Euler, CFG scale: 1, Seed: 1, Size: 8x8\nmore", "n"),
    ("Steps: 3, Sampler: Euler, CFG scale: 1\nstill the prompt", ""),
    ('commas, colons: and "quotes"', 'negative: "x", y'),
    ("(masterpiece:1.2), [bad], \\(escaped\\) BREAK next", "(worst quality:1.4)"),
    ("日本語のプロンプト, émoji 🎨", "ネガティブ"),
    ("trailing comma,", "Negative prompt: looks like a header"),
    ("tabs\there", "x"),
]
ROUND_TRIP_PARAMS = [
    base(),
    {**REFERENCE_PARAMS, "Version": "sfumato 0.1.0"},
    base(**{"Lora hashes": "add_detail: 7c6bad76eb54, more: 0123456789ab", "Clip skip": 2}),
    base(**{"Hires upscale": 2.0, "Hires steps": 10, "Hires upscaler": "R-ESRGAN 4x+", "Denoising strength": 0.5}),
    base(**{"Note": 'He said "hi", then\nleft: ok', "Outpaint": "0,64,0,0", "Emoji": "🎨, 🖌"}),
    base(**{"Template": '"quoted"', "Padding": " leading space", "Mask blur": 4, "Styles array": ["a", "b"]}),
    base(**{"Variation seed": 4294967294, "Variation seed strength": 0.05, "CFG scale": 12.25}),
]


@pytest.mark.parametrize(("prompt", "negative"), ROUND_TRIP_CASES)
@pytest.mark.parametrize("params", ROUND_TRIP_PARAMS)
def test_round_trip(prompt, negative, params):
    parsed = parse_infotext(format_infotext(prompt, negative, params))
    assert parsed["Prompt"] == prompt
    assert parsed["Negative prompt"] == negative
    for key, value in params.items():
        if key == "Clip skip" and value == 1:
            continue
        assert parsed[key] == as_text(value), key


def as_text(value: object) -> str:
    """What a value reads back as: its A1111 text, unquoted."""
    text = format_value(value)
    return json.loads(text) if text.startswith('"') else text


def test_round_trip_keeps_exact_values():
    params = base(**{"Note": 'He said "hi", then\nleft: ok', "Path": "C:\\models\\x.safetensors"})
    parsed = parse_infotext(format_infotext("p", "", params))
    assert parsed["Note"] == 'He said "hi", then\nleft: ok'
    assert parsed["Path"] == "C:\\models\\x.safetensors"


# --- typed fields ---------------------------------------------------------------------------------------------


def test_request_fields_from_a_modern_infotext():
    text = format_infotext(
        "a (cat:1.2)",
        "dog",
        {
            **REFERENCE_PARAMS,
            "VAE": "vae-ft-mse",
            "Variation seed": 77,
            "Variation seed strength": 0.3,
            "Denoising strength": 0.45,
            "Clip skip": 2,
            "Hires upscale": 1.5,
            "Hires steps": 12,
            "Hires upscaler": "Latent",
            "Mask blur": 8,
            "Version": "v1.10.1",
        },
    )
    fields = infotext_to_request_fields(parse_infotext(text))
    assert fields == {
        "prompt": "a (cat:1.2)",
        "negative_prompt": "dog",
        "steps": 20,
        "sampler_name": "DPM++ 2M",
        "scheduler": "Karras",
        "cfg_scale": 7.0,
        "seed": 1234,
        "width": 512,
        "height": 768,
        "model_hash": "6ce0161689",
        "model_name": "v1-5-pruned-emaonly",
        "vae_name": "vae-ft-mse",
        "subseed": 77,
        "subseed_strength": 0.3,
        "denoising_strength": 0.45,
        "clip_skip": 2,
        "enable_hr": True,
        "hr_scale": 1.5,
        "hr_second_pass_steps": 12,
        "hr_upscaler": "Latent",
        "mask_blur": 8,
    }
    assert isinstance(fields["cfg_scale"], float) and isinstance(fields["steps"], int)


def test_old_combined_sampler_names_are_split():
    old = "castle\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 768x512, ENSD: 31337"
    fields = infotext_to_request_fields(parse_infotext(old))
    assert fields["sampler_name"] == "DPM++ 2M" and fields["scheduler"] == "Karras"
    assert fields["clip_skip"] == 1  # A1111 leaves Clip skip out when it is 1
    assert (fields["width"], fields["height"]) == (768, 512)
    assert split_sampler("DPM++ 2M SDE Exponential") == ("DPM++ 2M SDE", "Exponential")
    assert split_sampler("Euler a") == ("Euler a", None)
    assert split_sampler("DPM fast") == ("DPM fast", None)
    assert split_sampler("Euler SGM Uniform") == ("Euler", "SGM Uniform")
    plain = infotext_to_request_fields(parse_infotext("x\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 1"))
    assert plain["sampler_name"] == "Euler" and plain["scheduler"] == "Automatic"


def test_unconvertible_values_are_skipped_not_fatal():
    fields = infotext_to_request_fields(parse_infotext("x\nSteps: many, Sampler: Euler, CFG scale: 7, Seed: abc"))
    assert "steps" not in fields and "seed" not in fields and fields["cfg_scale"] == 7.0


# --- files ----------------------------------------------------------------------------------------------------

TEXT = format_infotext(
    'a (red:1.2) fox, 日本, "quoted"\nsecond line', "blurry, ugly", {**REFERENCE_PARAMS, "Version": "v1"}
)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_files_carry_the_infotext(tmp_path, fmt):
    path = tmp_path / f"image.{fmt}"
    returned = save_image_with_infotext(Image.new("RGBA", (32, 24), (10, 200, 30, 255)), path, TEXT, fmt)
    assert returned == path
    assert [entry.name for entry in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    with Image.open(path) as image:
        assert image.format == fmt.upper()
        assert image.size == (32, 24)
        assert read_infotext(image) == TEXT
        infotext, items = read_image_info(image)
    assert infotext == TEXT
    assert items == {}
    assert parse_infotext(infotext)["Prompt"] == 'a (red:1.2) fox, 日本, "quoted"\nsecond line'


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_exif_user_comment_is_unicode_big_endian_and_undefined_typed(tmp_path, fmt):
    path = save_image_with_infotext(Image.new("RGB", (8, 8)), tmp_path / f"x.{fmt}", TEXT, fmt)
    with Image.open(path) as image:
        exif = image.info["exif"]
        comment = image.getexif().get_ifd(0x8769)[0x9286]
    assert comment == b"UNICODE\0" + TEXT.encode("utf-16-be")
    # the UserComment entry has type 7 (UNDEFINED), which piexif-based readers such as A1111 require
    assert struct.pack(">HH", 0x9286, 7) in exif


def test_exif_block_layout():
    block = infotext_to_exif("hi")
    assert block.startswith(b"Exif\0\0MM\0*")
    assert block.endswith(b"UNICODE\0\0h\0i")


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (encode_user_comment("héllo, 世界"), "héllo, 世界"),
        (b"UNICODE\0" + "little endian".encode("utf-16-le"), "little endian"),
        (b"UNICODE\0" + "\ufeffwith bom".encode("utf-16-le"), "with bom"),
        (b"ASCII\0\0\0plain ascii", "plain ascii"),
        (b"\0" * 8 + "undefined ütf8".encode(), "undefined ütf8"),
        ("already text", "already text"),
    ],
)
def test_user_comment_decoding(raw, text):
    assert decode_user_comment(raw) == text


def test_ascii_user_comment_in_a_jpeg_is_read(tmp_path):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\0\0\0Steps: 1, Sampler: Euler, CFG scale: 7"
    path = tmp_path / "ascii.jpg"
    Image.new("RGB", (8, 8)).save(path, exif=exif.tobytes())
    with Image.open(path) as image:
        assert read_infotext(image) == "Steps: 1, Sampler: Euler, CFG scale: 7"


def test_png_other_text_chunks_are_items(tmp_path):
    info = PngInfo()
    info.add_text("parameters", TEXT)
    info.add_text("Software", "Sfumato")
    info.add_text("comment", "ünïcode note")
    path = tmp_path / "chunks.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    with Image.open(path) as image:
        infotext, items = read_image_info(image)
    assert infotext == TEXT
    assert items == {"Software": "Sfumato", "comment": "ünïcode note"}


def test_image_without_infotext(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(path)
    with Image.open(path) as image:
        assert read_infotext(image) is None
        assert read_image_info(image) == (None, {})


def test_embed_keeps_other_png_chunks_and_replaces_parameters(tmp_path):
    info = PngInfo()
    info.add_text("parameters", "old")
    info.add_text("Software", "Sfumato")
    source = tmp_path / "source.png"
    Image.new("RGB", (8, 8)).save(source, pnginfo=info)
    with Image.open(source) as image:
        kwargs = embed_infotext(image, "new text")
        image.save(tmp_path / "out.png", **kwargs)
    with Image.open(tmp_path / "out.png") as image:
        assert read_image_info(image) == ("new text", {"Software": "Sfumato"})
    assert "exif" in embed_infotext(Image.new("RGB", (8, 8)), "x", "jpg")


def test_overwrite_is_atomic_and_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    save_image_with_infotext(Image.new("RGB", (8, 8), "red"), path, "first", "png")
    save_image_with_infotext(Image.new("RGB", (8, 8), "blue"), path, "second", "png")
    with Image.open(path) as image:
        assert read_infotext(image) == "second"

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image_with_infotext(Image.new("RGB", (8, 8)), path, "third", "png")
    monkeypatch.undo()
    assert [entry.name for entry in tmp_path.iterdir()] == ["out.png"]
    with Image.open(path) as image:
        assert read_infotext(image) == "second"


def test_webp_lossless_and_modes(tmp_path):
    source = Image.new("P", (8, 8))
    path = save_image_with_infotext(source, tmp_path / "x.webp", "text", "webp", lossless=True)
    with Image.open(path) as image:
        assert read_infotext(image) == "text"
    path = save_image_with_infotext(Image.new("LA", (8, 8)), tmp_path / "x.jpg", "text", "jpg")
    with Image.open(path) as image:
        assert image.format == "JPEG" and read_infotext(image) == "text"


def test_very_long_jpeg_infotext_falls_back_to_the_comment_segment(tmp_path):
    text = format_infotext("word " * 8000, "", base())
    path = save_image_with_infotext(Image.new("RGB", (8, 8)), tmp_path / "long.jpg", text, "jpeg")
    with Image.open(path) as image:
        assert read_infotext(image) == text
    with pytest.raises(ValueError):
        save_image_with_infotext(Image.new("RGB", (8, 8)), tmp_path / "huge.jpg", "x" * 70000, "jpeg")


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="gif"):
        save_image_with_infotext(Image.new("RGB", (8, 8)), tmp_path / "x.gif", "t", "gif")


def test_inpaint_and_outpaint_settings_read_back_from_the_infotext():
    from modules.image.infotext import format_infotext, infotext_to_request_fields, parse_infotext

    text = format_infotext("a cat", "", {"Steps": 20, "Sampler": "Euler", "CFG scale": 7, "Seed": 1,
                                         "Size": "64x64", "Mask blur": 4, "Inpaint area": "Only masked",
                                         "Masked area padding": 32, "Outpaint": "0,64,8,0",
                                         "Styles array": ["moody", "sunny, bright"]})
    fields = infotext_to_request_fields(parse_infotext(text))
    assert fields["mask_blur"] == 4 and fields["inpaint_full_res"] is True
    assert fields["inpaint_full_res_padding"] == 32
    assert fields["outpaint"] == {"left": 0, "right": 64, "top": 8, "bottom": 0}
    assert fields["styles"] == ["moody", "sunny, bright"]
