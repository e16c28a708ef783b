"""One page-load event for every control whose starting value is read when the page opens.

A control built with a callable ``value`` (a saved default, the default model, the current extension list) gets
its own load event from Gradio: with ~60 such controls a page opens with ~60 queued round trips, which on a busy
machine arrive over seconds, and any of them may overwrite what the user already typed. ``load_together`` folds
them into a single ``Blocks.load`` whose one answer sets them all at once; a value function that raises leaves
its control as built and is logged, so one bad default cannot blank the page.

It reads Gradio's own record of the pending load (``Component.load_event_to_attach``, set for a callable value
and attached when the Blocks context closes); on a Gradio without it, nothing changes and each control keeps
its own load event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

log = logging.getLogger(__name__)
LOADED_MARK = "sfLoaded"  # data attribute of <body> set once the starting values have arrived


def load_together(blocks: gr.Blocks) -> int:
    """Move the plain page-load events of ``blocks``' components into one; call inside the Blocks context, after
    every component is built. Returns how many were folded."""
    folded: list[tuple[Any, Callable[[], Any]]] = []
    for component in blocks.blocks.values():
        pending = getattr(component, "load_event_to_attach", None)
        if not pending:
            continue
        load_fn, triggers, inputs = pending
        if triggers or inputs:  # reloaded by a timer or by other inputs: keeps its own event
            continue
        folded.append((component, load_fn))
        component.load_event_to_attach = None
    if not folded:
        return 0
    outputs = [component for component, _fn in folded]

    def load_all() -> list[Any]:
        values = []
        for component, load_fn in folded:
            try:
                values.append(load_fn())
            except Exception:  # one broken default must not blank the page's others
                log.exception("the starting value of %s failed", getattr(component, "label", None) or component)
                values.append(gr.skip())
        return values

    loaded = blocks.load(load_all, inputs=None, outputs=outputs, api_name=False, show_progress="hidden",
                         queue=False)
    # The page marks the moment its starting values are in (``<body data-sf-loaded="1">``): from then on what a
    # user (or a browser test) types is no longer overwritten. Their build-time values look the same, so the
    # controls themselves cannot tell.
    loaded.then(None, js=f"() => {{ document.body.dataset.{LOADED_MARK} = '1'; }}", api_name=False,
                queue=False)
    return len(folded)
