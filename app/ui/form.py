"""Named components, so every handler takes one dict of values by name and returns one dict of updates by name.

A1111's tabs pass a hundred positional arguments to each handler and break whenever a control is added. Here a
tab keeps its components in a ``Form`` (name -> component); ``Form.connect`` registers a plain function
``fn(values_by_name) -> updates_by_name`` with Gradio's dict inputs (a *set* of components), translating
component keys to names on the way in and names to components on the way out. The plain functions know nothing
about Gradio, so tests call them directly with ordinary dicts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

# Keys a plain handler may put in its updates to raise a toast instead of updating a component.
WARNING = "_warning"
INFO = "_info"
# The value key under which ``connect(..., session=True)`` hands a handler its browser session's id.
SESSION = "_session"

Values = dict[str, Any]
Handler = Callable[[Values], Values] | Callable[[Values], Iterator[Values]]


@dataclass
class Form:
    """A name -> component map with the translation both ways."""

    components: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.components[name]

    def __contains__(self, name: object) -> bool:
        return name in self.components

    def __setitem__(self, name: str, component: Any) -> None:
        self.components[name] = component

    def names(self) -> list[str]:
        return list(self.components)

    def prefixed(self, prefix: str) -> Form:
        """The same components under ``prefix.name``, so forms of several tabs can be joined without clashes."""
        return Form({f"{prefix}.{name}": component for name, component in self.components.items()})

    def __or__(self, other: Form) -> Form:
        return Form({**self.components, **other.components})

    def by_name(self, values: Mapping[Any, Any]) -> Values:
        """Gradio's component-keyed input dict -> values by name (components not in this form are ignored)."""
        lookup = {id(component): name for name, component in self.components.items()}
        return {lookup[id(key)]: value for key, value in values.items() if id(key) in lookup}

    def by_component(self, updates: Mapping[str, Any]) -> dict[Any, Any]:
        """Updates by name -> Gradio's component-keyed output dict; toast keys become toasts."""
        updates = dict(updates)
        warning, info = updates.pop(WARNING, None), updates.pop(INFO, None)
        if warning:
            gr.Warning(str(warning))
        if info:
            gr.Info(str(info))
        unknown = [name for name in updates if name not in self.components]
        if unknown:
            raise KeyError(f"handler updated unknown fields: {', '.join(unknown)}")
        return {self.components[name]: value for name, value in updates.items()}

    def connect(
        self,
        trigger: Callable[..., Any],
        fn: Handler,
        inputs: Iterable[str],
        outputs: Iterable[str],
        session: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Register ``fn`` on an event listener (e.g. ``button.click``) with inputs and outputs given by name.
        With ``session``, the values also hold the browser session's id under ``SESSION`` (None without one)."""
        input_names = list(inputs)
        output_names = list(outputs)
        input_set = {self[name] for name in input_names}
        output_list = [self[name] for name in output_names]
        if not input_set:  # Gradio calls a listener with no inputs without arguments

            def call_without_inputs() -> Any:
                return _filled(self.by_component(fn({})), output_list)

            return trigger(call_without_inputs, inputs=None, outputs=output_list, **kwargs)
        def values(data: dict, request: gr.Request | None) -> Values:
            named = self.by_name(data)
            if session:
                named[SESSION] = getattr(request, "session_hash", None)
            return named

        if inspect.isgeneratorfunction(fn):

            def stream(data: dict, request: gr.Request | None = None) -> Iterator[dict]:
                for update in fn(values(data, request)):
                    yield _filled(self.by_component(update), output_list)

            return trigger(stream, inputs=input_set, outputs=output_list, **kwargs)

        def call(data: dict, request: gr.Request | None = None) -> Any:
            return _filled(self.by_component(fn(values(data, request))), output_list)

        return trigger(call, inputs=input_set, outputs=output_list, **kwargs)


def _filled(updates: dict[Any, Any], outputs: list[Any]) -> Any:
    """An empty update (a handler that only raised a toast, or had nothing to change) as one "no change" per
    output: Gradio reads an empty dict as a single value and fails the event with "didn't return enough output
    values" (an HTTP 500 in the browser). A listener without outputs gets None: Gradio warns about any value."""
    if not outputs:
        return None
    if updates:
        return updates
    return gr.skip() if len(outputs) == 1 else tuple(gr.skip() for _ in outputs)
