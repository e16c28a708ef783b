"""Extensions inside the running studio: their controls join a tab and reach them by name, their routes join the
API, and the Extensions tab installs from a local git repository (refused when the studio is exposed)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import textwrap

import httpx
import pytest

STAMP = '''
from fastapi import APIRouter


def setup(ext):
    def controls():
        import gradio as gr

        return {"word": gr.Textbox(label="Stamp: word", value="")}

    ext.add_controls("txt2img", controls)

    @ext.adjust_request
    def stamp(request, settings):
        return request.replace(prompt=f"{request.prompt}, {settings['word']}") if settings.get("word") else None

    router = APIRouter()

    @router.get("/hello")
    def hello():
        return {"extension": ext.name}

    ext.add_routes(router)
    ext.add_css(".stamp-extension { color: red; }")
'''


def make_extension(folder, name: str, code: str) -> None:
    folder.mkdir(parents=True)
    (folder / "extension.toml").write_text(f'name = "{name}"\nversion = "0.3"\ndescription = "stamps prompts"\n')
    (folder / "extension.py").write_text(textwrap.dedent(code))


@pytest.fixture
def stamped_services(tmp_path, tiny_model_store):
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    shutil.copytree(tiny_model_store, tmp_path / "models")
    make_extension(tmp_path / "user-ext" / "stamp", "stamp", STAMP)
    config = AppConfig(models_dir=tmp_path / "models", outdir=tmp_path / "outputs", data_dir=tmp_path / "data",
                       default_ckpt="tiny-sd1", user_extensions_dir=tmp_path / "user-ext")
    services = build_services(config)
    services.start()
    yield services
    services.stop()


def test_controls_join_the_tab_and_their_values_reach_the_extension_by_name(stamped_services):
    from app.ui import build_layout
    from app.ui.generate import generation_events

    ui = build_layout(stamped_services)
    tab = ui.generation["txt2img"]
    assert "ext.stamp.word" in tab.inputs
    values = {"task": "txt2img", "prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 1,
              "ext.stamp.word": "sunset"}
    *_, last = list(generation_events(stamped_services, values, poll=0.02))
    assert "a red circle, sunset" in last["infotext"]


def test_routes_css_and_listing_join_the_api(stamped_services):
    from app.api import create_api
    from app.server import launch_options
    from tests.api_server import serve_app

    with serve_app(create_api(stamped_services)) as server:
        assert httpx.get(f"{server.url}/extensions/stamp/hello").json() == {"extension": "stamp"}
        rows = httpx.get(f"{server.url}/sdapi/v1/extensions").json()
        assert {row["name"]: row["status"] for row in rows} == {"stamp": "active", "xyz_plot": "active"}
    assert ".stamp-extension" in launch_options(stamped_services, stamped_services.config)["css"]


def local_repository(root):
    folder = root / "stamp2-src"
    make_extension(folder, "stamp2", STAMP)
    for command in (["git", "init", "-q"], ["git", "add", "."],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "v1"]):
        subprocess.run(command, cwd=folder, check=True)
    return folder


def test_extensions_tab_installs_disables_and_removes(stamped_services, tmp_path):
    from app.ui import extensions_tab as tab

    source = local_repository(tmp_path)
    installed = tab.install(stamped_services, {"source": str(source)})
    assert "installed stamp2" in installed["status"]
    names = {row[0]: row for row in installed["table"]}
    assert names["stamp2"][4] == "active" and names["stamp2"][2] == "user"
    disabled = tab.disable(stamped_services, {"name": "stamp2"})
    assert {row[0]: row[4] for row in disabled["table"]}["stamp2"] == "disabled"
    updated = tab.update(stamped_services, {"name": "stamp2"})
    assert "up to date" in updated["status"]
    removed = tab.remove(stamped_services, {"name": "stamp2"})
    assert "stamp2" not in {row[0] for row in removed["table"]}
    refused = tab.remove(stamped_services, {"name": "xyz_plot"})
    assert "built in" in refused["_warning"] and "xyz_plot" in {row[0] for row in refused["table"]}


def test_install_is_refused_when_the_studio_is_exposed(stamped_services, tmp_path):
    from app.ui import extensions_tab as tab

    source = local_repository(tmp_path)
    exposed = dataclasses.replace(stamped_services, config=dataclasses.replace(stamped_services.config, listen=True))
    refused = tab.install(exposed, {"source": str(source)})
    assert "--enable-insecure-extension-access" in refused["_warning"]
    assert not (stamped_services.config.extensions_dir / "stamp2").exists()
    allowed = dataclasses.replace(exposed, config=dataclasses.replace(exposed.config,
                                                                      enable_insecure_extension_access=True))
    assert "installed stamp2" in tab.install(allowed, {"source": str(source)})["status"]


def test_a_disabled_extension_hides_its_controls_at_page_load_and_is_left_out_of_requests(stamped_services):
    """The page is built once, at launch: after disabling, the next page load hides the extension's controls, and
    a page still showing them (opened before) generates without the extension instead of being refused."""
    from app.ui import build_layout
    from app.ui.controls import extension_visibility
    from app.ui.generate import generation_events

    ui = build_layout(stamped_services)
    tab = ui.generation["txt2img"]
    shown = extension_visibility(stamped_services, tab, {})
    assert shown["ext_group.stamp"] == {"__type__": "update", "visible": True}
    assert set(shown) == {"ext_group.stamp", "ext_group.xyz_plot"}  # each active extension's own group
    group = tab.form["ext_group.stamp"]._id
    loads = [dep for dep in ui.blocks.get_config_file()["dependencies"] if group in dep["outputs"]]
    assert len(loads) == 1 and [target[1] for target in loads[0]["targets"]] == ["load"]

    stamped_services.extensions.set_enabled("stamp", False)
    assert extension_visibility(stamped_services, tab, {})["ext_group.stamp"]["visible"] is False
    values = {"task": "txt2img", "prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 1,
              "ext.stamp.word": "sunset"}
    *_, last = list(generation_events(stamped_services, values, poll=0.02))
    assert last["infotext"].startswith("a red circle\n") and "sunset" not in last["infotext"]

    stamped_services.extensions.set_enabled("stamp", True)
    assert extension_visibility(stamped_services, tab, {})["ext_group.stamp"]["visible"] is True
    *_, last = list(generation_events(stamped_services, values, poll=0.02))
    assert "a red circle, sunset" in last["infotext"]
