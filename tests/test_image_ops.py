"""Pixel preparation rules for img2img, inpaint and outpaint."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from modules.image import ops as image_ops


def test_resize_modes_give_the_requested_size_and_their_own_framing():
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    ImageDraw.Draw(wide).rectangle((0, 0, 49, 99), fill=(0, 0, 255))
    stretched = image_ops.resize_image(wide, 100, 100, 0)
    cropped = image_ops.resize_image(wide, 100, 100, 1)
    filled = image_ops.resize_image(wide, 100, 100, 2)
    assert stretched.size == cropped.size == filled.size == (100, 100)
    assert stretched.getpixel((5, 50))[2] > 200  # blue quarter kept at the left edge
    assert cropped.getpixel((5, 50))[0] > 200  # cover-crop cut the blue quarter away
    assert filled.getpixel((50, 5)) == filled.getpixel((50, 30))  # bands filled from the edge rows


def test_masks_from_alpha_threshold_and_invert():
    rgba = Image.new("RGBA", (8, 8), (10, 10, 10, 255))
    rgba.putpixel((1, 1), (0, 0, 0, 0))
    mask = image_ops.mask_from_image(rgba)
    assert mask.getpixel((1, 1)) == 255 and mask.getpixel((2, 2)) == 0
    soft = Image.new("L", (4, 1))
    soft.putdata([0, 100, 200, 255])
    assert list(image_ops.prepare_mask(soft, invert=False).getdata()) == [0, 0, 255, 255]
    assert list(image_ops.prepare_mask(soft, invert=True).getdata()) == [255, 255, 0, 0]


def test_masked_region_is_padded_keeps_aspect_and_stays_inside():
    mask = Image.new("L", (100, 100), 0)
    ImageDraw.Draw(mask).rectangle((80, 40, 95, 50), fill=255)
    crop = image_ops.masked_region(mask, padding=10, width=64, height=64)
    assert 0 <= crop.left < crop.right <= 100 and 0 <= crop.top < crop.bottom <= 100
    assert crop.left <= 70 and crop.right >= 100 - 0 and crop.top <= 30
    assert abs((crop.right - crop.left) - (crop.bottom - crop.top)) <= 1


def test_fill_modes_change_only_the_masked_area():
    image = Image.new("RGB", (32, 32), (0, 200, 0))
    mask = Image.new("L", (32, 32), 0)
    ImageDraw.Draw(mask).rectangle((10, 10, 20, 20), fill=255)
    keep = np.asarray(mask) == 0
    for mode in range(4):
        filled = np.asarray(image_ops.fill_masked(image, mask, mode, seed=1))
        assert np.array_equal(filled[keep], np.asarray(image)[keep])
    surrounded = image_ops.fill_masked(image, mask, 0, seed=1)
    assert np.abs(np.subtract(surrounded.getpixel((15, 15)), (0, 200, 0))).max() <= 2  # takes the surrounding colour


def test_outpaint_canvas_rounds_to_multiples_of_8_and_masks_the_new_area():
    image = Image.new("RGB", (60, 40), (1, 2, 3))
    canvas, mask = image_ops.outpaint_canvas(image, left=10, right=0, top=5, bottom=0)
    assert canvas.size == (72, 48)
    assert canvas.crop((10, 5, 70, 45)).tobytes() == image.tobytes()
    assert mask.getpixel((0, 0)) == 255 and mask.getpixel((20, 20)) == 0
