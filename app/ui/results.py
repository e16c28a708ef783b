"""A tab's memory of its last result: what each gallery item is, its infotext and seed, and which one is selected.

Kept in a per-session ``gr.State`` (one per tab), so selecting an image, ♻ "reuse seed" and "send to" act on
what this user sees, never on a global "last generation". Items follow the gallery's order: the grid first when
there is one (as A1111 shows it), then the images.
"""

from __future__ import annotations

from typing import Any

from app.ui.form import Values
from modules.jobs.artifacts import JobResult


def empty_state() -> dict[str, Any]:
    return {"items": [], "selected": 0}


def result_state(result: JobResult) -> dict[str, Any]:
    """The state for any kind's result, from its image artifacts: saved paths where there are files (so
    downloads keep the infotext); the first image that is not a grid is selected."""
    items = []
    for artifact in result.artifacts:
        if artifact.type != "image":
            continue
        items.append({
            "image": str(artifact.path) if artifact.path is not None else artifact.image,
            "infotext": artifact.infotext,
            "seed": artifact.parameters.get("seed", -1),
            "subseed": artifact.parameters.get("subseed", -1),
            "grid": artifact.grid,
        })
    selected = next((index for index, item in enumerate(items) if not item["grid"]), 0)
    return {"items": items, "selected": selected}


def selected_item(state: Any) -> dict[str, Any] | None:
    if not state or not state.get("items"):
        return None
    items = state["items"]
    index = min(max(int(state.get("selected", 0)), 0), len(items) - 1)
    return items[index]


def select_image(values: Values, index: Any) -> Values:
    """Gallery click: remember the selection and show that image's infotext."""
    state = dict(values.get("result") or empty_state())
    if isinstance(index, (list, tuple)):
        index = index[0]
    if not state.get("items") or index is None:
        return {}
    state["selected"] = min(max(int(index), 0), len(state["items"]) - 1)
    return {"result": state, "infotext": state["items"][state["selected"]]["infotext"]}


def reuse_seed(values: Values) -> Values:
    """♻: the seed of the selected image (the first image's when the grid is selected) into the seed box."""
    state = values.get("result")
    item = selected_item(state)
    if item is None:
        return {}
    if item.get("grid") and len(state["items"]) > 1:
        item = state["items"][1]
    return {"seed": item["seed"]}


def random_seed(_values: Values) -> Values:
    """⚄: -1 asks the engine for a random seed, which it then reports per image."""
    return {"seed": -1}


def random_subseed(_values: Values) -> Values:
    return {"subseed": -1}
