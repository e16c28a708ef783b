"""The "Extra networks" accordion under a tab's prompt: the LoRAs and embeddings in the models folder, searchable;
a click writes ``<lora:name:1>`` or the embedding's name into the prompt (or the negative prompt), which is all a
request needs, since the engine reads both from the prompt as A1111 does.

The lists are read from the folders when the tab is built and again when Refresh or the search box asks (never at
import); the handlers are plain functions of strings, so they are tested without a browser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

if TYPE_CHECKING:
    from app.ui.controls import GenerationTab
    from modules.runtime.services import Services

PAGE_SIZE = 30


def matching(names: list[str], query: str) -> list[str]:
    """The names containing every word of ``query`` (any case), in their order."""
    words = (query or "").lower().split()
    return [name for name in names if all(word in name.lower() for word in words)]


def lora_names(services: Services, query: str = "") -> list[str]:
    return matching([item.name for item in services.engine.networks.loras()], query)


def embedding_names(services: Services, query: str = "") -> list[str]:
    return matching([item.name for item in services.engine.networks.embeddings()], query)


def insert(text: str, addition: str) -> str:
    """``addition`` appended to a prompt, separated as a user would type it; a second click adds nothing twice."""
    text = text or ""
    if addition in text:
        return text
    stripped = text.rstrip()
    if not stripped:
        return addition
    separator = " " if stripped.endswith(",") or addition.startswith("<") else ", "
    return f"{stripped}{separator}{addition}"


def lora_tag(name: str) -> str:
    return f"<lora:{name}:1>"


def add(sample: list[str] | None, to_negative: bool, text: str, negative_text: str, tag: bool) -> tuple[str, str]:
    """A clicked LoRA (``tag``) or embedding written into the prompt or the negative prompt."""
    if not sample:
        return text, negative_text
    addition = lora_tag(sample[0]) if tag else sample[0]
    if to_negative:
        return text, insert(negative_text, addition)
    return insert(text, addition), negative_text


def _samples(names: list[str]) -> Any:
    return gr.update(samples=[[name] for name in names])


def build_extra_networks(services: Services, tab: GenerationTab) -> None:
    """The accordion for ``tab`` (call where it should appear, after the prompt row)."""
    with gr.Accordion("Extra networks", open=False):
        with gr.Row():
            search = gr.Textbox(label="Search", placeholder="Filter LoRAs and embeddings by name", scale=4)
            negative = gr.Checkbox(label="Insert into the negative prompt", value=False, scale=2)
            refresh = gr.Button("Refresh", size="sm", scale=1)
        loras = gr.Dataset(label="LoRA (click inserts <lora:name:1>)", components=[gr.Textbox(visible=False)],
                           samples=[[name] for name in lora_names(services)], samples_per_page=PAGE_SIZE,
                           type="values")
        embeddings = gr.Dataset(label="Textual-inversion embeddings (click inserts the name)",
                                components=[gr.Textbox(visible=False)],
                                samples=[[name] for name in embedding_names(services)],
                                samples_per_page=PAGE_SIZE, type="values")
    prompt, negative_prompt = tab.form["prompt"], tab.form["negative_prompt"]

    def lists(query: str) -> tuple[Any, Any]:
        return _samples(lora_names(services, query)), _samples(embedding_names(services, query))

    for trigger in (search.submit, refresh.click):
        trigger(lists, inputs=search, outputs=[loras, embeddings], queue=False)
    search.change(lists, inputs=search, outputs=[loras, embeddings], queue=False, show_progress="hidden")
    for dataset, tag in ((loras, True), (embeddings, False)):
        dataset.click(lambda sample, to_negative, text, negative_text, tag=tag: add(sample, to_negative, text,
                                                                                    negative_text, tag),
                      inputs=[dataset, negative, prompt, negative_prompt], outputs=[prompt, negative_prompt],
                      queue=False, show_progress="hidden")
    for name, component in (("search", search), ("loras", loras), ("embeddings", embeddings),
                            ("refresh", refresh), ("negative", negative)):
        tab.add(f"extra_networks_{name}", component, request_field=False)
