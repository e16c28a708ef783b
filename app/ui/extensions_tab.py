"""The Extensions tab: what is installed and its state, enable/disable, reload, install, update and remove.

Installing runs an author's code on this machine, so when the studio is exposed (``--listen``/``--share``) without
``--enable-insecure-extension-access`` the install, update and remove controls are disabled and the tab says why.
Handlers take values by name and return updates by name, so tests call them with plain dicts.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.ui.form import INFO, WARNING, Form, Values
from app.ui.generate import error_html, status_html

if TYPE_CHECKING:
    from modules.runtime.services import Services

COLUMNS = ["name", "version", "source", "enabled", "status", "description / error"]


def install_allowed(services: Services) -> bool:
    config = services.config
    exposed = bool(config.listen or config.share)
    return not exposed or bool(config.enable_insecure_extension_access)


def build_extensions(services: Services) -> Form:
    """Lay out and wire the tab (call inside a ``gr.Tab``)."""
    form = Form()
    allowed = install_allowed(services)
    form["table"] = gr.Dataframe(headers=COLUMNS, value=lambda: extension_rows(services), interactive=False,
                                 wrap=True, label="Installed extensions")
    with gr.Row():
        form["name"] = gr.Dropdown(label="Extension", choices=extension_names(services), allow_custom_value=True,
                                   scale=3)
        form["enable"] = gr.Button("Enable", size="sm")
        form["disable"] = gr.Button("Disable", size="sm")
        form["update"] = gr.Button("Update", size="sm", interactive=allowed)
        form["remove"] = gr.Button("Remove", size="sm", variant="stop", interactive=allowed)
        form["reload"] = gr.Button("Reload all", size="sm")
    gr.Markdown("### Install from a git URL or a local folder")
    if not allowed:
        from modules.extensions.install import EXPOSED_MESSAGE

        gr.Markdown(f"**{html.escape(EXPOSED_MESSAGE)}**")
    with gr.Row():
        form["source"] = gr.Textbox(label="URL or folder", placeholder="https://github.com/user/extension.git",
                                    scale=4, interactive=allowed)
        form["install"] = gr.Button("Install", variant="primary", interactive=allowed)
    form["status"] = gr.HTML("")
    form["log"] = gr.Textbox(label="Installer output", lines=6, interactive=False)
    outputs = ["table", "name", "status", "log"]
    actions = {"enable": enable, "disable": disable, "update": update, "remove": remove, "reload": reload,
               "install": install}
    for button, action in actions.items():
        form.connect(form[button].click, lambda values, action=action: action(services, values),
                     ["name", "source"], outputs, api_name=False)
    return form


def extension_rows(services: Services) -> list[list[Any]]:
    rows = []
    for item in services.extensions.list():
        info = item.describe()
        note = info["error"] or info["description"]
        rows.append([info["name"], info["version"], info["source"], info["enabled"], info["status"], note])
    return rows


def extension_names(services: Services) -> list[str]:
    return [item.name for item in services.extensions.list()]


def _refreshed(services: Services, message: str, log: str = "", failed: bool = False) -> Values:
    status = error_html("extensions", message) if failed else status_html(message)
    update: Values = {"table": extension_rows(services), "name": gr.update(choices=extension_names(services)),
                      "status": status, "log": log}
    update[WARNING if failed else INFO] = message
    return update


def _guard(action):
    """Turn an installer or manager error into a visible notice, never an exception in the UI."""
    from modules.extensions.manager import ExtensionError

    def wrapped(services: Services, values: Values) -> Values:
        try:
            return action(services, values)
        except ExtensionError as error:
            return _refreshed(services, str(error), failed=True)
    return wrapped


def _name(values: Values) -> str:
    from modules.extensions.manager import ExtensionError

    name = str(values.get("name") or "").strip()
    if not name:
        raise ExtensionError("choose an extension first")
    return name


@_guard
def enable(services: Services, values: Values) -> Values:
    item = services.extensions.set_enabled(_name(values), True)
    return _refreshed(services, f"{item.name}: {item.status}" + (f" ({item.error})" if item.error else ""),
                      failed=bool(item.error))


@_guard
def disable(services: Services, values: Values) -> Values:
    item = services.extensions.set_enabled(_name(values), False)
    return _refreshed(services, f"{item.name} disabled; it stays off after a restart (API routes and page styles it "
                                f"added go away at the next restart).")


@_guard
def reload(services: Services, values: Values) -> Values:
    items = services.extensions.reload()
    failed = [item.name for item in items if item.status == "failed"]
    message = f"Reloaded {len(items)} extension(s)" + (f"; failed: {', '.join(failed)}" if failed else ".")
    return _refreshed(services, message, failed=bool(failed))


def _check_allowed(services: Services) -> None:
    from modules.extensions.install import check_allowed

    config = services.config
    check_allowed(exposed=bool(config.listen or config.share),
                  insecure_access=bool(config.enable_insecure_extension_access))


@_guard
def install(services: Services, values: Values) -> Values:
    from modules.extensions.install import install as install_extension

    _check_allowed(services)
    report = install_extension(str(values.get("source") or ""), services.extensions.user_dir)
    services.extensions.reload()
    item = services.extensions.get(report.name)
    message = f"{report.message}; {item.status}" + (f" ({item.error})" if item.error else "")
    needs = f"Requirements: {', '.join(report.requirements)}\n" if report.requirements else "No requirements.\n"
    return _refreshed(services, message, needs + report.pip_output, failed=bool(item.error))


@_guard
def update(services: Services, values: Values) -> Values:
    from modules.extensions.install import update as update_extension

    _check_allowed(services)
    report = update_extension(services.extensions.get(_name(values)))
    services.extensions.reload()
    return _refreshed(services, report.message, report.pip_output)


@_guard
def remove(services: Services, values: Values) -> Values:
    from modules.extensions.install import remove as remove_extension

    _check_allowed(services)
    name = _name(values)
    remove_extension(services.extensions.get(name))
    services.extensions.reload()
    return _refreshed(services, f"Removed {name}.")
