"""The X/Y/Z plot through the API: A1111's ``script_name`` + positional ``script_args`` (as webuiapi sends them)
and the native API's settings by name, both through the one queue to the one engine."""

from __future__ import annotations

import base64
import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.api_studio import running_studio


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_store):
    with running_studio(tmp_path_factory.mktemp("xyz-api"), tiny_model_store) as running:
        yield running


def decode(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def test_a1111_script_name_runs_a_2x2x2_plot(studio):
    import webuiapi

    client = webuiapi.WebUIApi(host="127.0.0.1", port=studio.server.port)
    # A1111's positional order: x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type,
    # z_values, z_values_dropdown, draw_legend, include_lone_images, ...
    args = ["Steps", "2,3", None, "CFG Scale", "3,7", None, "Seed", "1,2", None, True, True]
    result = client.txt2img(prompt="a red circle", width=64, height=64, steps=2, seed=5,
                            script_name="x/y/z plot", script_args=args)
    info = result.info
    grids = result.images[: info["index_of_first_image"]]
    cells = result.images[info["index_of_first_image"]:]
    assert len(grids) == 2 and len(cells) == 8
    assert all(grid.size == grids[0].size for grid in grids) and grids[0].size[0] > 2 * 64
    first, second = (np.asarray(cell.convert("RGB"), dtype=np.int16) for cell in cells[:2])
    assert np.abs(first - second).mean() > 0.5  # cells differ along X (2 vs 3 steps)
    assert "X Type: Steps" in info["infotexts"][0] and "Y Type: CFG Scale" in info["infotexts"][0]


def test_unknown_script_is_a_4xx_naming_the_field(studio):
    response = httpx.post(f"{studio.url}/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64,
                                                                   "steps": 2, "script_name": "no such script"})
    assert response.status_code == 422 and "script_name" in response.json()["detail"]
    bad_axis = httpx.post(f"{studio.url}/sdapi/v1/txt2img", json={
        "prompt": "x", "width": 64, "height": 64, "steps": 2, "script_name": "x/y/z plot",
        "script_args": ["Steps", "2-x", None]})
    assert bad_axis.status_code == 422 and "xyz_plot.x_values" in bad_axis.json()["detail"]


def test_native_api_runs_the_plot_by_name(studio):
    body = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 2, "seed": 4,
            "extensions": {"xyz_plot": {"x_type": "Seed", "x_values": "4, 5", "y_type": "Steps", "y_values": "2,3"}}}
    job = httpx.post(f"{studio.url}/api/v1/jobs", json=body).json()
    deadline = time.time() + 120
    while time.time() < deadline:
        state = httpx.get(f"{studio.url}/api/v1/jobs/{job['id']}").json()
        if state["state"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.1)
    assert state["state"] == "done", state
    images = httpx.get(f"{studio.url}/api/v1/jobs/{job['id']}/images", params={"encoding": "base64"}).json()
    entries = images["images"] if isinstance(images, dict) else images
    assert len(entries) == 1 + 4  # one grid (no Z axis) and the four cells
    grid = decode(entries[0]["image"])
    assert grid.size[0] > 2 * 64 and grid.size[1] > 2 * 64  # four 64 px cells plus the legends
    assert "X Type: Seed" in entries[0]["infotext"] and "Y Type: Steps" in entries[0]["infotext"]


def test_native_api_checks_extension_settings_before_queueing(studio):
    before = len(studio.services.queue.jobs())
    unknown = httpx.post(f"{studio.url}/api/v1/jobs", json={"prompt": "x", "extensions": {"nope": {"a": 1}}})
    assert unknown.status_code == 422 and "extensions.nope" in unknown.json()["detail"]
    bad = httpx.post(f"{studio.url}/api/v1/jobs", json={
        "prompt": "x", "extensions": {"xyz_plot": {"x_type": "Steps", "x_values": "1-x"}}})
    assert bad.status_code == 422 and "xyz_plot.x_values" in bad.json()["detail"]
    assert len(studio.services.queue.jobs()) == before  # nothing was queued
