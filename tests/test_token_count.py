"""The prompt's "12/75" counter: the browser's estimate against the real CLIP tokenizer, and its wiring (a local
function, no server event that could race the Generate click)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from app.ui.token_count import CHUNK_TOKENS, COMMA_BACKTRACK, COUNT_JS

PROMPTS = [
    "a red circle on a blue background",
    "a photograph of an astronaut riding a horse on mars, highly detailed, 8k, trending on artstation",
    "masterpiece, best quality, ultra-detailed, illustration, 1girl, solo, long hair, looking at viewer, smile, "
    "cyberpunk cityscape, neon lights, volumetric lighting",
    "portrait of a beautiful elven princess, intricate, elegant, highly detailed, digital painting, artstation, "
    "concept art, smooth, sharp focus, illustration, art by artgerm and greg rutkowski and alphonse mucha",
    "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, worst "
    "quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry",
    "(masterpiece:1.2), ((a cat)), [blurry], <lora:style:0.8> sitting on a windowsill",
    "a cat sitting on a windowsill, " * 10,
]


def browser_counts(texts: list[str]) -> list[str]:
    """``COUNT_JS`` run by Node, the same code the page runs."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("needs Node.js to run the page's counter outside a browser")
    script = f"const count = {COUNT_JS};\nfor (const text of {json.dumps(texts)}) console.log(count(text));"
    return subprocess.run([node, "-e", script], capture_output=True, text=True, check=True).stdout.split()


def test_the_estimate_is_close_to_the_clip_tokenizer_and_shows_the_chunks():
    from modules.image.prompt_embeddings import COMMA_BACKTRACK as ENGINE_BACKTRACK
    from modules.image.prompt_embeddings import prompt_token_count
    from modules.models.clip_vocab import load_clip_tokenizer

    assert COMMA_BACKTRACK == ENGINE_BACKTRACK
    tokenizer = load_clip_tokenizer()
    for text, shown in zip(PROMPTS, browser_counts(PROMPTS), strict=True):
        used, available = (int(part) for part in shown.split("/"))
        real_used, real_available = prompt_token_count(tokenizer, text)
        assert abs(used - real_used) <= max(3, real_used // 8), (text, shown, real_used)
        assert available == CHUNK_TOKENS * max(1, -(-used // CHUNK_TOKENS))
        if abs(real_used - real_available) > 10 and real_used % CHUNK_TOKENS > 10:  # far from a chunk's edge
            assert available == real_available, (text, shown, real_available)


def test_empty_long_and_break_prompts():
    empty, long, broken, weights = browser_counts(["", "word " * 80, "a cat BREAK a dog", "(cat:1.3) [dog]"])
    assert empty == f"0/{CHUNK_TOKENS}"
    assert long == f"80/{2 * CHUNK_TOKENS}"  # past 75, a second chunk: "80/150" as in A1111
    assert broken == f"{CHUNK_TOKENS + 2}/{2 * CHUNK_TOKENS}"  # BREAK fills the first chunk
    assert weights == f"2/{CHUNK_TOKENS}"  # brackets and weights cost nothing


def test_each_prompt_box_has_a_counter_run_in_the_browser(services):
    from app.ui import build_layout

    ui = build_layout(services)
    config = ui.blocks.get_config_file()
    for tab in ui.generation.values():
        for name in ("prompt", "negative_prompt"):
            box, counter = tab.form[name]._id, tab.form[f"{name}_tokens"]._id
            events = [dep for dep in config["dependencies"]
                      if [box, "change"] in [list(target) for target in dep["targets"]]]
            assert len(events) == 1, name
            event = events[0]
            assert event["js"] == COUNT_JS and not event["backend_fn"] and event["outputs"] == [counter]
            assert event["queue"] is False and event["show_progress"] == "hidden"
        assert "prompt_tokens" not in tab.inputs


def test_lora_tags_cost_no_tokens_in_the_engine_or_the_page():
    from modules.image.prompt_embeddings import prompt_token_count
    from modules.models.clip_vocab import load_clip_tokenizer

    tokenizer = load_clip_tokenizer()
    assert prompt_token_count(tokenizer, "a cat <lora:ink_style:0.8>, <lora:x>") == prompt_token_count(tokenizer,
                                                                                                        "a cat , ")
    tagged, plain = browser_counts(["a cat <lora:ink_style:0.8>, <lora:x>", "a cat , "])
    assert tagged == plain
