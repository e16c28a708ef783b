"""What the UNet sees at each step when a prompt uses prompt editing, alternation or composable ``AND``.

diffusers pipelines encode the prompt once and feed the same embeddings to every step, and they only know one
conditional prediction per image. A1111's syntax needs both to vary, so for such prompts the UNet's ``forward`` is
wrapped for the length of one job (``UnetScope``, restored in ``finally``; the worker thread is the pipeline's only
user): each call takes the conditioning of its step and, for ``AND``, runs one conditional prediction per
sub-prompt and returns their combination ``uncond + sum_i w_i (eps_i - uncond)`` in the conditional slot, so the
pipeline's own ``uncond + cfg * (cond - uncond)`` becomes A1111's composable guidance. A prompt without that
syntax takes the unchanged path (``encode_prompt_pair``, no wrapper), so its pixels do not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modules.image.prompt_schedule import prompt_schedule, split_and, text_at

_MISSING = object()


def schedule_steps(pipe: Any, steps: int) -> int:
    """UNet calls one pass of ``steps`` makes: A1111 counts both evaluations of a second-order sampler (Heun,
    DPM2), and diffusers runs those as two loop iterations each (but the last)."""
    return steps * 2 - 1 if getattr(pipe.scheduler, "order", 1) == 2 and steps > 1 else steps


@dataclass
class _Plan:
    """One pipeline call's per-step conditioning."""

    images: int
    subprompts: list[tuple[list[tuple[int, str]], float]]  # (schedule, weight)
    negative: list[tuple[int, str]]
    embeds: dict[str, tuple[Any, Any | None]]  # text -> (hidden [1, seq, dim], pooled [1, dim] or None)
    calls: int = 0

    def __call__(self, original: Any, sample: Any, timestep: Any, *args: Any, **kwargs: Any) -> Any:
        import torch

        step = self.calls
        self.calls += 1
        hidden_in = kwargs.pop("encoder_hidden_states", None)
        if hidden_in is None and args:
            hidden_in, args = args[0], args[1:]
        count, images = sample.shape[0], self.images
        if hidden_in is None or count not in (images, 2 * images):
            return original(sample, timestep, *args, encoder_hidden_states=hidden_in, **kwargs)
        guided = count == 2 * images

        def rows(tensor: Any) -> Any:
            return tensor.to(device=hidden_in.device, dtype=hidden_in.dtype).expand(images, *tensor.shape[1:])

        negative = self.embeds[text_at(self.negative, step)]
        conds = [(self.embeds[text_at(schedule, step)], weight) for schedule, weight in self.subprompts]
        if len(conds) == 1 and conds[0][1] == 1.0:  # prompt editing only: swap the embeddings, same batch
            hidden = [negative, conds[0][0]] if guided else [conds[0][0]]
            kwargs["added_cond_kwargs"] = _with_pooled(kwargs.get("added_cond_kwargs"), hidden, rows)
            encoder_hidden = torch.cat([rows(item[0]) for item in hidden])
            return original(sample, timestep, *args, encoder_hidden_states=encoder_hidden, **kwargs)

        # Composable AND: [uncond, sub-prompt 1, ..., sub-prompt K] in one batch.
        parts = [negative, *(embeds for embeds, _weight in conds)]
        repeat = len(conds)

        def widen(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == count:
                uncond, cond = (value[:images], value[images:]) if guided else (value, value)
                return torch.cat([uncond, *([cond] * repeat)])
            if isinstance(value, (list, tuple)):
                return type(value)(widen(item) for item in value)
            if isinstance(value, dict):
                return {key: widen(item) for key, item in value.items()}
            return value

        kwargs = {key: widen(value) for key, value in kwargs.items()}
        kwargs["added_cond_kwargs"] = _with_pooled(kwargs.get("added_cond_kwargs"), parts, rows)
        output = original(widen(sample), widen(timestep), *args,
                          encoder_hidden_states=torch.cat([rows(item[0]) for item in parts]), **kwargs)
        eps = output[0] if isinstance(output, tuple) else output.sample
        uncond = eps[:images]
        combined = uncond.clone()
        for index, (_embeds, weight) in enumerate(conds):
            combined += weight * (eps[images * (index + 1) : images * (index + 2)] - uncond)
        result = torch.cat([uncond, combined]) if guided else combined
        if isinstance(output, tuple):
            return (result, *output[1:])
        return type(output)(sample=result)


def _with_pooled(added: dict | None, parts: list[tuple[Any, Any | None]], rows: Any) -> dict | None:
    """SDXL's ``added_cond_kwargs`` with ``text_embeds`` taken from the same texts as the hidden states."""
    import torch

    if not added or "text_embeds" not in added or any(pooled is None for _hidden, pooled in parts):
        return added
    reference = added["text_embeds"]
    pooled = torch.cat([rows(item[1]).to(device=reference.device, dtype=reference.dtype) for item in parts])
    return {**added, "text_embeds": pooled}


class UnetScope:
    """Wraps a UNet's ``forward`` while a job runs and restores it on exit, whatever happened; with no plan set
    the wrapper calls straight through, so a pass that needs nothing runs exactly as unwrapped."""

    def __init__(self) -> None:
        self.plan: _Plan | None = None
        self._patched: list[tuple[Any, Any]] = []

    def __enter__(self) -> UnetScope:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.plan = None
        while self._patched:
            module, saved = self._patched.pop()
            if saved is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.forward = saved

    def use(self, unet: Any, plan: _Plan | None) -> None:
        """Make ``plan`` the conditioning of the next pipeline call on ``unet`` (None: the pipeline's own)."""
        self.plan = plan
        if plan is None or any(module is unet for module, _saved in self._patched):
            return
        original = unet.forward
        self._patched.append((unet, unet.__dict__.get("forward", _MISSING)))

        def forward(sample: Any, timestep: Any, *args: Any, **kwargs: Any) -> Any:
            current = self.plan
            if current is None:
                return original(sample, timestep, *args, **kwargs)
            return current(original, sample, timestep, *args, **kwargs)

        unet.forward = forward


def conditioning_kwargs(pipe: Any, prompt: str, negative_prompt: str, *, clip_skip: int, steps: int,
                        first_pass_steps: int | None, images: int, scope: UnetScope) -> dict[str, Any]:
    """The embedding keyword arguments for one pipeline call, and the scope's plan for its steps.

    ``steps`` is this pass's step count; ``first_pass_steps`` is given for a hires-fix second pass, whose timeline
    continues the first one's. A prompt whose text never changes and has a single sub-prompt of weight 1 is
    encoded by ``encode_prompt_pair`` exactly as before, and the UNet is left alone.
    """
    from modules.image.prompt_embeddings import encode_prompt_pair, encode_texts

    total = schedule_steps(pipe, steps)
    first = schedule_steps(pipe, first_pass_steps) if first_pass_steps else None
    subprompts = [(prompt_schedule(text, total, first), weight) for text, weight in split_and(prompt)]
    negative = prompt_schedule(negative_prompt, total, first)
    texts = list(dict.fromkeys([text for schedule, _w in subprompts for _end, text in schedule]
                               + [text for _end, text in negative]))
    unchanging = len({text for _end, text in negative}) == 1 and len(subprompts) == 1 and (
        subprompts[0][1] == 1.0 and len({text for _end, text in subprompts[0][0]}) == 1)
    if unchanging:
        scope.use(pipe.unet, None)
        return encode_prompt_pair(pipe, subprompts[0][0][0][1], negative[0][1], clip_skip=clip_skip)

    embeds = dict(zip(texts, encode_texts(pipe, texts, clip_skip), strict=True))
    plan = _Plan(images, subprompts, negative, embeds)
    scope.use(pipe.unet, plan)
    first_hidden, first_pooled = embeds[text_at(subprompts[0][0], 0)]
    negative_hidden, negative_pooled = embeds[text_at(negative, 0)]
    kwargs: dict[str, Any] = {"prompt_embeds": first_hidden, "negative_prompt_embeds": negative_hidden}
    if first_pooled is not None:
        kwargs["pooled_prompt_embeds"] = first_pooled
        kwargs["negative_pooled_prompt_embeds"] = negative_pooled
    return kwargs
