"""The AUTOMATIC1111 dialect (``/sdapi/v1/*``), spoken exactly so that existing scripts and ``webuiapi`` work.

Generation routes translate the A1111 body into a ``GenerationRequest``, check it, queue it like any other job
and block until it ends, as A1111 clients expect; they are plain ``def`` routes, so FastAPI runs each in a worker
thread and a long generation never stalls the event loop (or the progress endpoint polled meanwhile). Options
are the studio's saved settings: ``sd_model_checkpoint`` there is the default model of later requests, while
``override_settings`` only fills fields of the one request it comes with.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api import a1111_models as wire
from app.api.context import get_owner, is_admin
from app.api.errors import ApiError
from app.api.images import decode_image, encode_png_base64
from app.api.requests_common import ServicesDep, visible_to, wait_for_job
from modules.errors import RequestError
from modules.image.request import GenerationRequest
from modules.jobs.queue import Job, JobCancelled
from modules.upscaling.names import LATENT_UPSCALERS

if TYPE_CHECKING:
    from modules.runtime.services import Services

router = APIRouter(prefix="/sdapi/v1", tags=["A1111"])
Owner = Annotated[str | None, Depends(get_owner)]


def require_admin(http_request: Request) -> None:
    """Dependency of the operator's routes (global options, launch flags): 403 naming the route for other keys."""
    if not is_admin(http_request):
        route = f"{http_request.method} {http_request.url.path}"
        raise ApiError(403, f"{route} is for the studio's operator: use the --api-auth login or a key marked "
                            '"admin": true in the keys file')


Admin = Depends(require_admin)


# -- generation -----------------------------------------------------------------------------------------------


@router.post("/txt2img")
async def txt2img(body: wire.Txt2ImgBody, response: Response, http_request: Request, services: ServicesDep,
                  owner: Owner) -> dict[str, Any]:
    request = await run_in_threadpool(
        lambda: _with_scripts(services, wire.txt2img_request(body, request_defaults(services)), body))
    return await _generate(services, request, body, response, owner, http_request)


@router.post("/img2img")
async def img2img(body: wire.Img2ImgBody, response: Response, http_request: Request, services: ServicesDep,
                  owner: Owner) -> dict[str, Any]:
    request = await run_in_threadpool(  # decoding the images is work: not on the event loop
        lambda: _with_scripts(services, wire.img2img_request(body, request_defaults(services)), body))
    return await _generate(services, request, body, response, owner, http_request)


async def _generate(services: Services, request: GenerationRequest, body: wire.GenerationBody, response: Response,
                    owner: str | None, http_request: Request) -> dict[str, Any]:
    """Check, queue, wait; the job's id goes back in a header so a client can find it in the job history (and
    the job counts against the caller's key like one submitted through the native API). The wait is on the
    event loop, so a hundred blocked A1111 callers hold no threads and /progress, /interrupt stay answered; a
    caller that hangs up has its job cancelled."""
    try:
        job = await run_in_threadpool(lambda: services.queue.submit(request, source="a1111", owner=owner))
    except RequestError as error:
        raise wire.wire_error(error, body) from None
    response.headers["X-Job-Id"] = job.id
    await wait_for_job(services.queue, job, http_request=http_request)
    try:
        result = services.queue.wait(job, timeout=0)
    except RequestError as error:
        raise wire.wire_error(error, body) from None
    except JobCancelled:
        raise ApiError(409, "the job was cancelled before it ran") from None
    except RuntimeError as error:
        raise ApiError(500, f"generation failed: {error}") from None
    return await run_in_threadpool(wire.generation_response, body, result)


def _with_scripts(services: Services, request: GenerationRequest, body: wire.GenerationBody) -> GenerationRequest:
    """A1111's ``script_name`` + positional ``script_args`` (and ``alwayson_scripts`` naming one of our scripts)
    become the extension's settings by name inside the request; an unknown script is a 4xx naming the field."""
    from modules.extensions.manager import request_with_settings

    manager = services.extensions
    selected: list[tuple[str | None, list[Any]]] = []
    if body.script_name:
        selected.append((body.script_name, list(body.script_args or [])))
    known = manager.scripts()
    from app.api.controlnet_units import is_controlnet_script, units_from_wire

    for title, entry in (body.alwayson_scripts or {}).items():
        if is_controlnet_script(title):
            request = request.replace(controlnet=request.controlnet + units_from_wire(entry))
        elif str(title).strip().lower() in known:
            args = entry.get("args", []) if isinstance(entry, dict) else entry
            if args is not None and not isinstance(args, (list, tuple)):
                raise ApiError(422, "args must be a list of the script's arguments", f"alwayson_scripts.{title}.args")
            selected.append((title, list(args or [])))
    for title, args in selected:
        try:
            name, settings = manager.script_settings(title, args)
        except RequestError as error:
            raise ApiError(422, error.message, error.field) from None
        request = request_with_settings(request, name, settings)
    return request


def request_defaults(services: Services) -> wire.Defaults:
    """The saved options a request falls back on, read at submit time so the queued request carries them."""
    settings = services.settings
    clip_skip = settings.get("CLIP_stop_at_last_layers") or 1
    return wire.Defaults(
        model=None,  # the queue fills in the studio's default at submission, as for every dialect
        vae=wire.own_vae_as_none(settings.get("sd_vae")),
        clip_skip=int(clip_skip),
        make_grid=bool(settings.get("make_grid", True)),
        output_format=settings.get("output_format") or "png",
    )


def current_model(services: Services) -> Any:
    """The default checkpoint, as every dialect and the UI resolve it (``Services.default_model``)."""
    title = services.default_model()
    return services.engine.registry.find(title) if title else None


# -- watching and stopping ------------------------------------------------------------------------------------


@router.get("/progress")
def progress(services: ServicesDep, owner: Owner, skip_current_image: bool = False) -> dict[str, Any]:
    """The running job's progress in A1111's shape; idle (``job_count`` 0) when nothing runs, or when what runs is
    another caller's job (its id, prompt and live preview are not this caller's to see)."""
    job = services.queue.current
    if job is None or not visible_to(job, owner):
        return {"progress": 0.0, "eta_relative": 0.0, "state": _idle_state(), "current_image": None,
                "textinfo": None, "current_task": None}
    return _job_progress(job, skip_current_image)


def _idle_state() -> dict[str, Any]:
    return {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "", "job_count": 0,
            "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0}


def _job_progress(job: Job, skip_image: bool) -> dict[str, Any]:
    snapshot = job.progress
    started = time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or job.created))
    state = {
        "skipped": job.control.skipped.is_set(),
        "interrupted": job.control.interrupted.is_set(),
        "stopping_generation": False,
        "job": snapshot.text,
        "job_count": snapshot.job_count,
        "job_timestamp": started,
        "job_no": snapshot.job_no,
        "sampling_step": snapshot.step,
        "sampling_steps": snapshot.steps,
    }
    preview = None if skip_image else snapshot.current_preview()
    image = encode_png_base64(preview) if preview is not None else None
    return {"progress": snapshot.fraction, "eta_relative": job.eta() or 0.0, "state": state,
            "current_image": image, "textinfo": snapshot.text or None, "current_task": job.id}


@router.post("/interrupt")
def interrupt(services: ServicesDep, owner: Owner) -> dict[str, Any]:
    """Stop the running job; a caller with an API identity may stop only its own (one key cannot end another's)."""
    if _may_control_current(services, owner):
        services.queue.interrupt_current()
    return {}


@router.post("/skip")
def skip(services: ServicesDep, owner: Owner) -> None:
    if _may_control_current(services, owner):
        services.queue.skip_current()


def _may_control_current(services: Services, owner: str | None) -> bool:
    current = services.queue.current
    return current is not None and (owner is None or current.owner == owner)


# -- options --------------------------------------------------------------------------------------------------


@router.get("/options")
def get_options(services: ServicesDep) -> dict[str, Any]:
    return wire.read_options(services.settings.all(), current_model(services), str(services.config.outdir))


@router.post("/options", dependencies=[Admin])
def set_options(values: Annotated[dict[str, Any], Body()], services: ServicesDep) -> None:
    """Save the options; a new ``sd_model_checkpoint`` is the default of every later request, whichever dialect
    or tab sends it (the queue reads the saved settings at each submission)."""
    cleaned = wire.clean_options(values)
    engine = services.engine
    if "sd_model_checkpoint" in cleaned:
        cleaned["sd_model_checkpoint"] = _find_model(engine, cleaned["sd_model_checkpoint"]).title
    if "sd_vae" in cleaned:
        cleaned["sd_vae"] = _find_vae_name(engine, cleaned["sd_vae"])
    services.settings.update(cleaned)


def _find_model(engine: Any, name: str) -> Any:
    from modules.models.registry import UnknownModelError

    try:
        return engine.registry.find(name)
    except UnknownModelError as error:
        raise ApiError(400, str(error), "sd_model_checkpoint") from None


def _find_vae_name(engine: Any, name: str) -> str:
    from modules.models.registry import UnknownModelError

    try:
        vae = engine.registry.find_vae(wire.own_vae_as_none(name))
    except UnknownModelError as error:
        raise ApiError(400, str(error), "sd_vae") from None
    return vae.name if vae is not None else wire.AUTOMATIC_VAE


@router.get("/cmd-flags", dependencies=[Admin])
def cmd_flags(services: ServicesDep) -> dict[str, Any]:
    """The launch configuration, with credentials replaced by a marker (a script may print this); the operator's
    only, as it names the studio's folders."""
    flags = dataclasses.asdict(services.config)
    for key in [key for key in flags if key.endswith("_auth")]:
        flags[key] = "<hidden>" if flags[key] else None
    return _plain(flags)


def _plain(value: Any) -> Any:
    """JSON-friendly: paths as strings, tuples as lists."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return str(value) if isinstance(value, Path) else value


# -- listings -------------------------------------------------------------------------------------------------


@router.get("/sd-models")
def sd_models(services: ServicesDep) -> list[dict[str, Any]]:
    return [{"title": info.title, "model_name": info.name, "hash": info.short_hash, "sha256": info.sha256,
             "filename": str(info.path), "config": None} for info in services.engine.registry.list()]


@router.post("/refresh-checkpoints")
def refresh_checkpoints(services: ServicesDep) -> None:
    services.engine.registry.refresh()


@router.post("/refresh-vae")
def refresh_vae(services: ServicesDep) -> None:
    """The VAE folder is scanned at every listing, so a new file is already there; kept for A1111 clients."""
    services.engine.registry.list_vaes()


@router.get("/sd-modules")
def sd_modules(services: ServicesDep) -> list[dict[str, Any]]:
    """A1111 1.10 / Forge's list of separately loadable modules: here the VAEs (text encoders come with their
    checkpoint)."""
    return [{"model_name": info.name, "filename": str(info.path)} for info in services.engine.registry.list_vaes()]


@router.post("/unload-checkpoint", dependencies=[Admin])
def unload_checkpoint(services: ServicesDep) -> None:
    """Free the loaded models' memory now; a running job keeps the model it holds until it ends, and the next job
    loads its model again (the page and the progress say "Loading model")."""
    services.engine.pipelines.unload_all()


@router.post("/reload-checkpoint", dependencies=[Admin])
def reload_checkpoint(services: ServicesDep) -> None:
    """Load the checkpoints afresh from disk (e.g. after a file was replaced under the same name). Loading is the
    worker's job, so the models are dropped here and the next job loads its model from the file again."""
    services.engine.pipelines.unload_all()
    services.engine.registry.refresh()


@router.get("/sd-vae")
def sd_vae(services: ServicesDep) -> list[dict[str, Any]]:
    return [{"model_name": info.name, "filename": str(info.path)} for info in services.engine.registry.list_vaes()]


@router.get("/samplers")
def samplers() -> list[dict[str, Any]]:
    from modules.image.samplers import list_samplers

    return list_samplers()


@router.get("/schedulers")
def schedulers() -> list[dict[str, Any]]:
    from modules.image.samplers import list_schedulers

    return list_schedulers()


@router.get("/latent-upscale-modes")
def latent_upscale_modes() -> list[dict[str, str]]:
    return [{"name": name} for name in LATENT_UPSCALERS]


@router.get("/loras")
def loras(services: ServicesDep) -> list[dict[str, Any]]:
    """A1111's list: name (what ``<lora:name:w>`` writes), alias (the training name in its metadata), path and
    the safetensors metadata."""
    networks = services.engine.networks
    return [{"name": item.name, "alias": item.alias, "path": str(item.path), "metadata": networks.metadata(item.path)}
            for item in networks.loras()]


@router.post("/refresh-loras")
def refresh_loras(services: ServicesDep) -> None:
    """The folder is read at every request, so a new file is already usable; kept for A1111 clients."""
    services.engine.networks.loras()


@router.get("/embeddings")
def embeddings(services: ServicesDep) -> dict[str, dict[str, Any]]:
    """A1111's split: ``loaded`` are the embeddings a prompt can use with the model loaded now (all readable
    ones when none is loaded yet), ``skipped`` the others, each with a ``reason``."""
    from modules.models.networks import NetworkLoadError, describe_embedding, embedding_fits, read_embedding

    current = services.engine.pipelines.most_recent()
    loaded: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    for item in services.engine.networks.embeddings():
        try:
            entry = describe_embedding(item)
            problem = embedding_fits(current.base, read_embedding(item)) if current is not None else None
        except NetworkLoadError as error:
            entry = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None, "vectors": 0}
            problem = str(error)
        if problem:
            skipped[item.name] = {**entry, "reason": problem}
        else:
            loaded[item.name] = entry
    return {"loaded": loaded, "skipped": skipped}


@router.post("/refresh-embeddings")
def refresh_embeddings(services: ServicesDep) -> None:
    """Embeddings are read from the folder for each job; nothing to reload (kept for A1111 clients)."""
    services.engine.networks.embeddings()


@router.get("/prompt-styles")
def prompt_styles(services: ServicesDep) -> list[dict[str, str]]:
    return [{"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt}
            for style in services.engine.styles.list()]


@router.get("/memory")
def memory() -> dict[str, Any]:
    from modules.runtime.memory import memory_usage

    return memory_usage()


@router.get("/scripts")
def scripts(services: ServicesDep) -> dict[str, list[str]]:
    """The selectable scripts (extensions that answer to ``script_name``), by lower-case title like A1111."""
    titles = sorted([*_script_titles(services), "controlnet"])  # ControlNet is always on, as the extension is
    return {"txt2img": titles, "img2img": titles}


@router.get("/script-info")
def script_info(services: ServicesDep) -> list[dict[str, Any]]:
    """Each script's title and its positional arguments in ``script_args`` order, each with A1111's label, default,
    range and choices (the X/Y/Z plot's axis lists per tab: clients turn an axis label into the index they send)."""
    info = []
    for title in _script_titles(services):
        for is_img2img in (False, True):
            args = services.extensions.script_args(title, "img2img" if is_img2img else "txt2img")
            info.append({"name": title, "is_alwayson": False, "is_img2img": is_img2img, "args": args})
    return info


@router.get("/extensions")
def extensions(services: ServicesDep) -> list[dict[str, Any]]:
    """Installed extensions in A1111's shape, plus Sfumato's status and error."""
    manager = services.extensions
    rows = []
    for item in manager.list():
        info = item.describe()
        rows.append({"name": info["name"], "remote": info["remote"] or "", "branch": "", "commit_hash": "",
                     "commit_date": 0, "version": info["version"], "enabled": info["enabled"],
                     "status": info["status"], "error": info["error"], "source": info["source"]})
    return rows


def _script_titles(services: Services) -> dict[str, tuple[str, list[str]]]:
    manager = services.extensions
    return manager.scripts()


@router.get("/face-restorers")
def face_restorers() -> list[dict[str, Any]]:
    return []


# -- images -------------------------------------------------------------------------------------------------


@router.post("/png-info")
def png_info(body: wire.PngInfoBody) -> dict[str, Any]:
    """The infotext, the image's other text chunks, and the infotext parsed into A1111's key/value form."""
    from modules.image.infotext import parse_infotext, read_image_info

    if not body.image.strip():
        return {"info": "", "items": {}, "parameters": {}}
    infotext, items = read_image_info(decode_image(body.image, "image"))
    return {"info": infotext or "", "items": items, "parameters": parse_infotext(infotext) if infotext else {}}
