"""Long and weighted prompts, encoded the way A1111 encodes them, for SD 1.x/2.x and SDXL pipelines.

diffusers' own ``encode_prompt`` cuts a prompt at 77 tokens and ignores ``(word:1.3)``; A1111 users rely on
both. Here the prompt is parsed (``prompt_parser``), tokenized fragment by fragment, cut into 75-token chunks (at
``BREAK``, or at the last comma within 20 tokens of the limit), each chunk is framed as ``BOS tokens EOS pad...``
and encoded on its own, weighted, and the chunks are concatenated. The UNet's cross-attention accepts any sequence
length, so a pipeline called with these ``prompt_embeds`` sees the whole prompt. A short plain prompt gives exactly
what ``encode_prompt`` gives, so nothing changes for users who never use the syntax.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modules.image.prompt_parser import is_break, parse_prompt_attention

COMMA_BACKTRACK = 20  # A1111's comma_padding_backtrack default
_DEFAULT_LENGTH = 77


@dataclass
class Chunk:
    """Up to ``limit`` tokens of one prompt (no BOS/EOS), with a weight per token."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


def _sequence_length(tokenizer: Any) -> int:
    length = getattr(tokenizer, "model_max_length", _DEFAULT_LENGTH)
    return length if isinstance(length, int) and 3 <= length <= 1024 else _DEFAULT_LENGTH


def _comma_id(tokenizer: Any) -> int | None:
    ids = tokenizer(",", add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def _has_multi_vector_tokens(tokenizer: Any) -> bool:
    """Whether a multi-vector textual inversion is loaded (diffusers names its extra tokens ``<tok>_1``...)."""
    added = getattr(tokenizer, "added_tokens_encoder", None) or {}
    return any(f"{token}_1" in added for token in added)


def tokenize_chunks(tokenizer: Any, prompt: str, pipe: Any = None, backtrack: int = COMMA_BACKTRACK) -> list[Chunk]:
    """The prompt as weighted chunks of at most ``model_max_length - 2`` tokens, following A1111's ``tokenize_line``.

    ``pipe``, when given, expands multi-vector textual-inversion tokens (diffusers' ``maybe_convert_prompt``).
    """
    limit = _sequence_length(tokenizer) - 2
    fragments = parse_prompt_attention(prompt)
    texts = [text for text, weight in fragments if not is_break((text, weight))]
    convert = getattr(pipe, "maybe_convert_prompt", None)
    if callable(convert) and _has_multi_vector_tokens(tokenizer):
        texts = [convert(text, tokenizer) for text in texts]
    token_lists = iter(tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else [])
    comma = _comma_id(tokenizer)

    chunks: list[Chunk] = []
    current = Chunk()
    last_comma = -1

    def next_chunk() -> None:
        nonlocal current, last_comma
        chunks.append(current)
        current = Chunk()
        last_comma = -1

    for text, weight in fragments:
        if is_break((text, weight)):
            next_chunk()
            continue
        for token in next(token_lists):
            if token == comma:
                last_comma = len(current.tokens)
            elif backtrack and len(current.tokens) == limit and last_comma != -1 and limit - last_comma <= backtrack:
                # Move the words after the last comma into the next chunk so a phrase is not cut in two.
                cut = last_comma + 1
                moved = Chunk(current.tokens[cut:], current.weights[cut:])
                del current.tokens[cut:], current.weights[cut:]
                next_chunk()
                current = moved
            if len(current.tokens) == limit:
                next_chunk()
            current.tokens.append(token)
            current.weights.append(weight)
    if current.tokens or not chunks:
        next_chunk()
    return chunks


def prompt_token_count(tokenizer: Any, prompt: str) -> tuple[int, int]:
    """(tokens used, tokens available) for a UI counter like A1111's "12/75"; full chunks count as used. LoRA tags
    are not read by the text encoder, so they count nothing."""
    from modules.image.extra_networks import strip_extra_networks

    chunks = tokenize_chunks(tokenizer, strip_extra_networks(prompt))
    limit = _sequence_length(tokenizer) - 2
    used = limit * (len(chunks) - 1) + len(chunks[-1].tokens)
    return used, limit * len(chunks)


def _framed(tokenizer: Any, chunk: Chunk) -> tuple[list[int], list[float], int]:
    """BOS tokens EOS pad..., the matching weights (1 on the frame), and the position of the EOS."""
    length = _sequence_length(tokenizer)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids = [tokenizer.bos_token_id, *chunk.tokens, eos]
    weights = [1.0, *chunk.weights, 1.0]
    eos_at = len(ids) - 1
    ids += [pad] * (length - len(ids))
    weights += [1.0] * (length - len(weights))
    return ids, weights, eos_at


def _execution_device(module: Any) -> Any:
    try:
        from diffusers.utils.torch_utils import get_module_execution_device
    except ImportError:  # older diffusers
        return module.device
    return get_module_execution_device(module)


def _encode_chunks(
    tokenizer: Any, encoder: Any, chunks: list[Chunk], clip_skip: int, sdxl: bool
) -> tuple[Any, Any | None]:
    """Encode chunks in one batch -> ([chunks, length, dim] weighted hidden states, [chunks, dim] pooled or None)."""
    import torch

    device = _execution_device(encoder)
    framed = [_framed(tokenizer, chunk) for chunk in chunks]
    ids = torch.tensor([item[0] for item in framed], dtype=torch.long, device=device)
    weights = torch.tensor([item[1] for item in framed], dtype=torch.float32, device=device)
    mask = None
    if getattr(encoder.config, "use_attention_mask", False):
        positions = torch.arange(ids.shape[1], device=device)
        mask = (positions[None, :] <= torch.tensor([item[2] for item in framed], device=device)[:, None]).long()

    output = encoder(ids, attention_mask=mask, output_hidden_states=True)
    hidden = output.hidden_states
    if sdxl:  # SDXL conditions on the penultimate layer, without the final norm
        z = hidden[max(-len(hidden), -(clip_skip + 1))]
    elif clip_skip <= 1:
        z = output.last_hidden_state
    else:
        # transformers 4 nests the layers under ``text_model``; transformers 5 puts them on the model itself
        final_norm = getattr(encoder, "text_model", encoder).final_layer_norm
        z = final_norm(hidden[max(-len(hidden), -clip_skip)])
    pooled = getattr(output, "text_embeds", None)

    if bool((weights != 1.0).any()):
        z = _emphasise(z, weights)
    return z, pooled


def _emphasise(z: Any, weights: Any) -> Any:
    """A1111's "Original" emphasis: scale each token by its weight, then restore each chunk's mean.

    Done in float32. Where a chunk's mean is next to zero relative to its values (a layer norm without bias, as in
    randomly initialised encoders) the ratio of means is noise and could blow the embedding up by any factor, so the
    rescale is skipped there; trained encoders never come near that.
    """
    import torch

    z32 = z.float()
    original_mean = z32.mean(dim=(1, 2), keepdim=True)
    z32 = z32 * weights[:, :, None]
    new_mean = z32.mean(dim=(1, 2), keepdim=True)
    scale = z32.abs().mean(dim=(1, 2), keepdim=True)
    meaningful = (original_mean.abs() > 1e-3 * scale) & (new_mean.abs() > 1e-3 * scale)
    ratio = torch.where(meaningful, original_mean / torch.where(meaningful, new_mean, 1.0), 1.0)
    return (z32 * ratio).to(z.dtype)


def _encoders(pipe: Any) -> list[tuple[Any, Any]]:
    pairs = [(getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None))]
    pairs.append((getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None)))
    return [(tokenizer, encoder) for tokenizer, encoder in pairs if tokenizer is not None and encoder is not None]


def encode_prompt_pair(
    pipe: Any, prompt: str, negative_prompt: str, clip_skip: int = 1, num_images: int = 1
) -> dict[str, Any]:
    """The embedding keyword arguments for an SD/SDXL diffusers pipeline call (txt2img, img2img or inpaint).

    ``clip_skip`` counts as in A1111: 1 is the last layer. The prompt and negative prompt are padded with empty
    chunks to the same length, as classifier-free guidance batches them together. SDXL pooled embeddings come from
    the first chunk.
    """
    import torch

    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    encoders = _encoders(pipe)
    if not encoders:
        raise ValueError("the pipeline has no text encoder")
    clip_skip = max(1, int(clip_skip))

    chunked = [
        (tokenize_chunks(tokenizer, prompt, pipe), tokenize_chunks(tokenizer, negative_prompt, pipe))
        for tokenizer, _encoder in encoders
    ]
    count = max(len(chunks) for pair in chunked for chunks in pair)

    positive_parts, negative_parts = [], []
    pooled = negative_pooled = None
    with torch.no_grad():
        for (tokenizer, encoder), (positive, negative) in zip(encoders, chunked, strict=True):
            positive = positive + [Chunk() for _ in range(count - len(positive))]
            negative = negative + [Chunk() for _ in range(count - len(negative))]
            z, pooled_all = _encode_chunks(tokenizer, encoder, positive + negative, clip_skip, sdxl)
            # [2 * count, length, dim] -> [1, count * length, dim] for each side
            z = z.to(dtype=encoder.dtype)
            positive_parts.append(z[:count].reshape(1, -1, z.shape[-1]))
            negative_parts.append(z[count:].reshape(1, -1, z.shape[-1]))
            if pooled_all is not None:
                pooled, negative_pooled = (
                    pooled_all[0:1].to(encoder.dtype),
                    pooled_all[count : count + 1].to(encoder.dtype),
                )

    prompt_embeds = torch.cat(positive_parts, dim=-1).repeat_interleave(num_images, dim=0)
    negative_embeds = torch.cat(negative_parts, dim=-1).repeat_interleave(num_images, dim=0)
    result: dict[str, Any] = {"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_embeds}
    if sdxl:
        if pooled is None:
            raise ValueError("SDXL's second text encoder gave no pooled output (expected CLIPTextModelWithProjection)")
        result["pooled_prompt_embeds"] = pooled.repeat_interleave(num_images, dim=0)
        result["negative_pooled_prompt_embeds"] = negative_pooled.repeat_interleave(num_images, dim=0)
    return result


def encode_texts(pipe: Any, texts: list[str], clip_skip: int = 1) -> list[tuple[Any, Any | None]]:
    """(hidden states [1, seq, dim], pooled [1, dim] or None) for each text, all padded with empty chunks to one
    chunk count, so that any of them can stand beside any other in one UNet batch (prompt editing swaps the
    conditioning mid-run; composable ``AND`` batches sub-prompts together)."""
    import torch

    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    encoders = _encoders(pipe)
    if not encoders:
        raise ValueError("the pipeline has no text encoder")
    clip_skip = max(1, int(clip_skip))
    chunked = [[tokenize_chunks(tokenizer, text, pipe) for text in texts] for tokenizer, _encoder in encoders]
    count = max(len(chunks) for per_encoder in chunked for chunks in per_encoder)

    hidden_parts = []
    pooled = None
    with torch.no_grad():
        for (tokenizer, encoder), per_encoder in zip(encoders, chunked, strict=True):
            flat = [chunk for chunks in per_encoder for chunk in chunks + [Chunk() for _ in range(count - len(chunks))]]
            z, pooled_all = _encode_chunks(tokenizer, encoder, flat, clip_skip, sdxl)
            z = z.to(dtype=encoder.dtype)
            hidden_parts.append(z.reshape(len(texts), -1, z.shape[-1]))  # [texts, count * length, dim]
            if pooled_all is not None:
                pooled = pooled_all[::count].to(encoder.dtype)  # each text's first chunk, as encode_prompt_pair
    hidden = torch.cat(hidden_parts, dim=-1)
    if sdxl and pooled is None:
        raise ValueError("SDXL's second text encoder gave no pooled output (expected CLIPTextModelWithProjection)")
    return [(hidden[i : i + 1], pooled[i : i + 1] if pooled is not None else None) for i in range(len(texts))]
