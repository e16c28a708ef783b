"""Compatible image requests waiting in the queue run as one pipeline call.

One UNet call over N latents costs much less than N calls of one (on a GPU, and on a CPU with more cores than a
64-pixel image keeps busy), so the queue gathers compatible waiting jobs (``batch_key``) and the image kind runs
them with ``generate_batch``. Each request keeps everything of its own: its latents come from its own seeds (the
same noise it gets alone), its embeddings from its own prompts, its images, infotext, NSFW screening, grid and
result from its own settings, saved under its own job. Only the denoising and decoding calls are shared, so an
image has the same pixels as when its job runs alone, within float rounding of a batched matrix product.

Compatible means the same checkpoint, VAE, sampler, schedule, steps, CFG, size, clip skip, variation strength,
noise placement, LoRAs and output options, for txt2img on an SD 1.x / 2.x / XL checkpoint; a request with hires
fix, ControlNet units, SD upscale, extension settings, several batches (``n_iter``), or prompt editing /
alternation / ``AND`` runs alone, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from modules.errors import RequestError
from modules.image.request import GenerationRequest
from modules.jobs.control import JobControl, Progress

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from PIL import Image

    from modules.image.generation import Engine, _Run
    from modules.image.results import GenerationResult
    from modules.models.registry import CheckpointInfo


def batch_key(request: GenerationRequest, family: Callable[[str | None], str | None] | None = None
              ) -> Hashable | None:
    """What requests must share to run in one pipeline call; None for a request that always runs alone.

    ``family(model)`` names the checkpoint's family when known (flow-matching families run alone)."""
    from modules.image.extra_networks import extract_loras
    from modules.image.prompt_schedule import prompt_schedule, split_and

    if (request.task != "txt2img" or request.n_iter != 1 or request.hires is not None or request.controlnet
            or request.sd_upscale is not None or request.extensions or request.init_image is not None):
        return None
    try:
        prompt, negative, loras = extract_loras(request.prompt, request.negative_prompt)
    except RequestError:
        return None
    for text in (prompt, negative):
        if len(split_and(text)) > 1 or len(prompt_schedule(text, max(2, request.steps))) > 1:
            return None  # the UNet is wrapped per job for these
    if family is not None and family(request.model) in ("sd3", "flux"):
        return None
    return (request.model, request.vae, request.sampler_name, request.scheduler, request.steps, request.cfg_scale,
            request.width, request.height, request.clip_skip, request.subseed_strength, request.noise_on_device,
            request.make_grid, request.save_images, request.output_format, request.safety,
            tuple(sorted((use.name, use.te_weight, use.unet_weight) for use in loras)))


@dataclass
class _Member:
    """One request of a batch while it runs."""

    index: int
    request: GenerationRequest
    control: JobControl
    run: _Run
    info: CheckpointInfo
    seeds: list[int]
    subseeds: list[int]
    progress: Progress
    conditioning: dict[str, Any] = field(default_factory=dict)
    pictures: list[Image.Image] = field(default_factory=list)
    left: bool = False  # cancelled while the batch ran: its images are dropped


def generate_batch(requests: list[GenerationRequest], engine: Engine, controls: list[JobControl],
                   job_scope: Callable[[int], AbstractContextManager[Any]] = lambda _index: nullcontext(),
                   ) -> list[GenerationResult | BaseException]:
    """Run compatible requests (see ``batch_key``) as one pipeline call; one result or error per request.

    ``job_scope(i)`` is entered while request ``i``'s files are saved (the job's output manifest). A request that
    turns out not to fit (another model family after loading, a different prompt length) runs alone."""
    from modules.image.generation import _checked, _prepared_run, generate
    from modules.image.noise import batch_seeds, resolve_seed
    from modules.models.families import is_flow_family

    outcomes: list[Any] = [None] * len(requests)
    members: list[_Member] = []
    for index, (request, control) in enumerate(zip(requests, controls, strict=True)):
        try:
            request, sampler, make_scheduler, prompt, negative = _checked(request, engine)
            run, info = _prepared_run(request, engine, control, sampler, make_scheduler, prompt, negative)
        except BaseException as error:  # noqa: BLE001 - one request's failure is that job's outcome
            outcomes[index] = error
            continue
        seed = resolve_seed(request.seed)
        subseed = resolve_seed(request.subseed) if request.subseed_strength > 0 else request.subseed
        count = request.batch_size
        subseeds = batch_seeds(subseed, count) if request.subseed_strength > 0 else [subseed] * count
        members.append(_Member(index, request, control, run, info, batch_seeds(seed, count), subseeds,
                               Progress(job_count=1, steps=run.total_steps)))

    def alone(member: _Member) -> None:
        try:
            with job_scope(member.index):
                outcomes[member.index] = generate(requests[member.index], engine, member.control)
        except BaseException as error:  # noqa: BLE001
            outcomes[member.index] = error

    runnable = [m for m in members if not m.run.loaded.is_inpainting_model and not is_flow_family(m.run.loaded.family)
                and m.run.loaded is members[0].run.loaded]
    for member in members:
        if member not in runnable:
            alone(member)
    if len(runnable) == 1:
        alone(runnable[0])
    elif runnable:
        try:
            _run_together(runnable, engine, outcomes)
        except Exception as error:  # out of memory for the batch (a GPU), or anything else: each runs alone
            if not _out_of_memory(error):
                raise
            log.warning("a batch of %d jobs ran out of memory; running them one at a time", len(runnable))
            for member in runnable:
                member.pictures, member.left = [], False
                alone(member)
        for member in runnable:
            if outcomes[member.index] is None:
                try:
                    with job_scope(member.index):
                        outcomes[member.index] = _result(member, engine)
                except BaseException as error:  # noqa: BLE001
                    outcomes[member.index] = error
    return outcomes


def _out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def _run_together(members: list[_Member], engine: Engine, outcomes: list[Any]) -> None:
    """The LoRAs (the same for all) and every prompt's embeddings applied, then one call per embedding shape."""
    from modules.image.prompt_conditioning import UnetScope, conditioning_kwargs
    from modules.models.networks import NetworkLoadError, applied_networks

    first = members[0].run
    prompts = tuple(text for m in members for text in (m.run.encode_prompt, m.run.encode_negative))
    try:
        with applied_networks(first.loaded.base, engine.networks, first.loras, prompts) as applied:
            pipe = first._pipe("txt2img")
            with UnetScope() as scope:
                for member in members:
                    run = member.run
                    run.network_params = applied.params
                    run.encode_prompt, run.encode_negative = (applied.rewrite(run.encode_prompt),
                                                              applied.rewrite(run.encode_negative))
                    member.conditioning = conditioning_kwargs(
                        pipe, run.encode_prompt, run.encode_negative, clip_skip=member.request.clip_skip,
                        steps=member.request.steps, first_pass_steps=None, images=len(member.seeds), scope=scope)
                groups: dict[tuple, list[_Member]] = {}
                for member in members:
                    shape = tuple((key, tuple(value.shape)) for key, value in sorted(member.conditioning.items()))
                    groups.setdefault(shape, []).append(member)
                for group in groups.values():
                    _call(pipe, group, engine)
    except NetworkLoadError as error:
        for member in members:
            outcomes[member.index] = RequestError("prompt", str(error))


def _call(pipe: Any, group: list[_Member], engine: Engine) -> None:
    """One pipeline call for ``group``: their embeddings and noise stacked, the images split back."""
    import torch

    from modules.image.generation import _preview
    from modules.image.noise import generators, initial_latents
    from modules.image.samplers import custom_sigmas

    first = group[0]
    request, run = first.request, first.run
    shape = (pipe.unet.config.in_channels, run.height // pipe.vae_scale_factor, run.width // pipe.vae_scale_factor)
    latents = torch.cat([initial_latents(m.seeds, shape, device=engine.device, dtype=pipe.unet.dtype,
                                         subseeds=m.subseeds, subseed_strength=m.request.subseed_strength,
                                         on_device=m.request.noise_on_device) for m in group])
    conditioning = {key: torch.cat([m.conditioning[key].repeat(len(m.seeds), *([1] * (m.conditioning[key].dim() - 1)))
                                    for m in group]) for key in first.conditioning}
    seeds = [seed for m in group for seed in m.seeds]
    spans: list[tuple[_Member, int, int]] = []
    start = 0
    for member in group:
        spans.append((member, start, start + len(member.seeds)))
        start += len(member.seeds)

    def on_step_end(pipe: Any, step: int, _timestep: Any, tensors: dict) -> dict:
        for member, begin, end in spans:
            if member.left:
                continue
            control = member.control
            if control.interrupted.is_set() or control.skipped.is_set():
                member.left = True  # it leaves the batch; the others go on
                continue
            member.progress.step = step + 1
            interval = control.preview_interval
            if interval and member.progress.step % interval == 0 and "latents" in tensors:
                previewer = None if control.preview_method == "full" else engine.previewer
                member.progress.offer_preview(partial(_preview, pipe, tensors["latents"][begin:end], previewer))
            control.report(member.progress)
        if all(member.left for member in group):
            pipe._interrupt = True
        return {}

    kwargs = dict(conditioning)
    kwargs.update(custom_sigmas(run.sampler, pipe.scheduler, request.steps, sdxl=run.loaded.family == "sdxl"))
    with torch.inference_mode():
        images = pipe(height=run.height, width=run.width, latents=latents, output_type="pil",
                      num_inference_steps=request.steps, guidance_scale=request.cfg_scale, num_images_per_prompt=1,
                      generator=generators(seeds, engine.device, request.noise_on_device),
                      callback_on_step_end=on_step_end, **kwargs).images
    for member, begin, end in spans:
        member.pictures = [] if member.left else list(images[begin:end])


def _result(member: _Member, engine: Engine) -> GenerationResult:
    """What ``generate`` gives for this request alone: screened, saved images, its grid and summary."""
    from modules.image.generation import _grid, _saved, _summary
    from modules.image.results import GeneratedImage, GenerationResult
    from modules.safety.screen import screen_image

    request, run = member.request, member.run
    images = []
    for seed, subseed, picture in zip(member.seeds, member.subseeds, member.pictures, strict=False):
        item = GeneratedImage(picture, seed, subseed, run.prompt, run.negative, run.infotext(seed, subseed))
        item = screen_image(item, request.safety, engine.safety)
        images.append(_saved(engine.store, request.task, item, request.output_format) if request.save_images
                      else item)
    grid = _grid(images, request, engine) if request.make_grid and len(images) > 1 else None
    summary = _summary(request, member.info, run.prompt, run.negative, run.width, run.height, run.sampler,
                       engine.version, run.vae)
    interrupted = member.left or member.control.interrupted.is_set()
    return GenerationResult(images=images, grid=grid, summary=summary, interrupted=interrupted)
