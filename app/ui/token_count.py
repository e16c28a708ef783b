"""The "12/75" token counter beside a prompt, as A1111 shows it: CLIP reads a prompt in chunks of 75 tokens, so
past 75 the counter reads "80/150" and the artist sees that a second chunk began.

The count is an estimate made in the browser (``COUNT_JS``, run by a Gradio event with ``fn=None``), never a
request to the server. A server handler on the prompt box raced the Generate click: typing, then Ctrl+Enter or a
click, queued the counter's event beside the generation, and on a busy two-core machine the Generate was held
behind it or read a stale prompt. A local function cannot delay or drop that click, and counting needs no model:
every family the studio runs (SD 1.x, 2.x, SDXL) uses the same CLIP vocabulary and 75-token chunks, so the
estimate does not depend on which checkpoint is selected. It follows the prompt syntax the engine parses:
``(word:1.2)`` and ``[word]`` brackets and weights cost nothing, nor do ``<lora:name:w>`` tags (the engine takes
them out before encoding), and ``BREAK`` starts a new chunk. A word
of letters costs one token per eight letters (the vocabulary holds most whole English words; rarer ones split in
pieces), a digit one token each, a run of punctuation one token, and a full chunk moves the words after its last
comma into the next one, as the engine does; tests check it against the engine's own count.
"""

from __future__ import annotations

CHUNK_TOKENS = 75  # CLIP's 77 positions less the start and end tokens
COMMA_BACKTRACK = 20  # as the engine: a chunk that fills up moves the words after a comma this close to its end
LETTERS_PER_TOKEN = 8
EMPTY = f"0/{CHUNK_TOKENS}"

COUNT_JS = f"""(text) => {{
  const limit = {CHUNK_TOKENS}, backtrack = {COMMA_BACKTRACK};
  const words = /'s|'t|'re|'ve|'m|'ll|'d|\\p{{L}}+|\\p{{N}}|[^\\s\\p{{L}}\\p{{N}}]+/gu;
  let full = 0, current = 0, lastComma = -1;
  const next = () => {{ full += 1; current = 0; lastComma = -1; }};
  String(text || "").replace(/<\\w+:[^>]+>/g, "").split(/\\bBREAK\\b/).forEach((part, index) => {{
    if (index > 0) next();
    const clean = part.replace(/:\\s*-?\\d*\\.?\\d+\\s*([)\\]])/g, "$1")
      .replace(/(^|[^\\\\])[()\\[\\]]+/g, "$1 ")
      .replace(/\\\\([()\\[\\]])/g, "$1")
      .toLowerCase();
    for (const word of clean.match(words) || []) {{
      const pieces = /^\\p{{L}}/u.test(word) ? Math.ceil(word.length / {LETTERS_PER_TOKEN}) : 1;
      for (let piece = 0; piece < pieces; piece++) {{
        if (word === ",") lastComma = current;
        else if (current === limit && lastComma !== -1 && limit - lastComma <= backtrack) {{
          const moved = current - lastComma - 1;  // the words after the last comma open the next chunk
          next();
          current = moved;
        }}
        if (current === limit) next();
        current += 1;
      }}
    }}
  }});
  return (full * limit + current) + "/" + (full + 1) * limit;
}}"""
