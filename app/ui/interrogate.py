"""The Interrogate button of the img2img and inpaint tabs: the input image described as a prompt.

The click queues one interrogate job (the same kind ``/sdapi/v1/interrogate`` runs) and puts its caption in the
tab's prompt box. With no image, or no model installed, the prompt is left alone and a notice says what to do
(for a missing model: which folder to fill).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from app.ui.form import INFO, WARNING, Values
from app.ui.request_form import editor_image_and_mask, load_image
from modules.errors import RequestError
from modules.interrogate.request import InterrogateRequest
from modules.jobs.queue import JobCancelled

if TYPE_CHECKING:
    from app.ui.controls import GenerationTab
    from modules.runtime.services import Services

WAIT_SECONDS = 600.0  # a job queued behind long generations still answers; an abandoned one stops the wait


def interrogate_prompt(services: Services, image_name: str, values: Values, model: str = "clip") -> Values:
    """Values by name (the tab's image component under ``image_name``) -> the new prompt, or a notice."""
    try:
        image = _image(values.get(image_name), image_name)
    except RequestError as error:
        return {WARNING: f"Interrogate: {error.message}"}
    if image is None:
        return {WARNING: "Interrogate: put an image in first"}
    try:
        job = services.queue.submit(InterrogateRequest(image=image, model=model), source="ui")
        result: Any = services.queue.wait(job, timeout=WAIT_SECONDS)
    except RequestError as error:
        return {WARNING: f"Interrogate: {error.message}"}
    except JobCancelled:
        return {WARNING: "Interrogate: the job was cancelled"}
    except (RuntimeError, TimeoutError) as error:
        return {WARNING: f"Interrogate failed: {error}"}
    if not result.caption:
        return {INFO: "Interrogate: the model found no words for this image"}
    return {"prompt": result.caption}


def wire_interrogate(services: Services, tab: GenerationTab, image_name: str) -> None:
    """Connect the tab's ``interrogate`` button (see ``controls.prompt_row``) to its image and prompt."""
    tab.form.connect(tab.form["interrogate"].click, partial(interrogate_prompt, services, image_name),
                     [image_name], ["prompt"], api_name=False)


def _image(value: Any, name: str) -> Any:
    if isinstance(value, dict):  # the inpaint editor: its background, without the painted mask
        return editor_image_and_mask(value)[0]
    image = load_image(value, name)
    return image.convert("RGB") if image is not None else None
