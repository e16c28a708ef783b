"""Extensions: discovered from folders, hooks fire with the right data, and a broken one never stops a job."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from modules.errors import RequestError
from modules.extensions.install import check_allowed, install, normalise_source, remove
from modules.extensions.manager import ExtensionError, ExtensionManager, Manifest
from modules.image.request import GenerationRequest
from modules.jobs.control import JobControl

RECORDER = '''
from modules.extensions.api import Sweep

CALLS = []


def setup(ext):
    @ext.expand_request
    def expand(request, settings):
        CALLS.append(("expand", request.prompt, dict(settings)))
        if settings.get("cfgs"):
            cells = [request.replace(cfg_scale=value) for value in settings["cfgs"]]
            return Sweep(cells, [{"cfg": value} for value in settings["cfgs"]])
        return None

    @ext.adjust_request
    def adjust(request, settings):
        CALLS.append(("adjust", request.cfg_scale))
        return request.replace(prompt=request.prompt + settings.get("suffix", ""))

    @ext.on_step
    def step(event, settings):
        CALLS.append(("step", event.step, event.steps, event.cell, event.cells))

    @ext.postprocess
    def post(result, request, settings):
        CALLS.append(("post", request.prompt, len(result.images)))
        return None

    @ext.on_job_end
    def end(outcome, settings):
        CALLS.append(("end", [cell.label for cell in outcome.cells], [cell.error for cell in outcome.cells]))
        return None

    ext.add_script("Recorder", ["suffix", "cfgs"])
'''


def write_extension(root: Path, name: str, code: str, manifest: str | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "extension.toml").write_text(manifest or f'name = "{name}"\nversion = "1.2"\ndescription = "test"\n')
    (folder / "extension.py").write_text(textwrap.dedent(code))
    return folder


def manager_for(tmp_path: Path) -> ExtensionManager:
    return ExtensionManager(builtin_dir=tmp_path / "builtin", user_dir=tmp_path / "user",
                            state_file=tmp_path / "data" / "extensions.json", data_dir=tmp_path / "data")


def engine_runner(services):
    from modules.image.generation import generate

    return lambda request, control: generate(request, services.engine, control)


def small(**fields) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 3, **fields})


def test_every_hook_fires_with_the_right_data(tmp_path, services):
    write_extension(tmp_path / "user", "recorder", RECORDER)
    manager = manager_for(tmp_path)
    [item] = manager.load()
    assert item.status == "active" and item.manifest.version == "1.2"
    module = __import__("sfumato_extension_recorder")
    request = small(extensions={"recorder": {"suffix": ", blue", "cfgs": [3.0, 5.0]}})
    result = manager.run_job(request, JobControl(), engine_runner(services))
    calls = module.CALLS
    assert calls[0] == ("expand", "a red circle", {"suffix": ", blue", "cfgs": [3.0, 5.0]})
    assert [c for c in calls if c[0] == "adjust"] == [("adjust", 3.0), ("adjust", 5.0)]
    steps = [c for c in calls if c[0] == "step"]
    assert {c[3] for c in steps} == {0, 1} and all(c[4] == 2 and c[2] == 2 for c in steps)
    assert [c for c in calls if c[0] == "post"] == [("post", "a red circle, blue", 1)] * 2
    assert calls[-1] == ("end", [{"cfg": 3.0}, {"cfg": 5.0}], [None, None])
    # no extension combined the cells, so the job's result is every cell's image in order
    assert len(result.images) == 2 and all("a red circle, blue" in image.infotext for image in result.images)
    assert "CFG scale: 3," in result.images[0].infotext and "CFG scale: 5," in result.images[1].infotext


def test_a1111_script_args_map_to_settings_by_name(tmp_path):
    write_extension(tmp_path / "user", "recorder", RECORDER)
    manager = manager_for(tmp_path)
    manager.load()
    assert manager.script_settings("recorder", [", x", [1.0]]) == ("recorder", {"suffix": ", x", "cfgs": [1.0]})
    with pytest.raises(RequestError, match="script_name"):
        manager.script_settings("no such script", [])


def test_broken_extensions_are_reported_and_skipped_while_generation_works(tmp_path, services):
    write_extension(tmp_path / "user", "import-error", "raise RuntimeError('cannot start')\n")
    write_extension(tmp_path / "user", "no-setup", "X = 1\n")
    write_extension(tmp_path / "user", "bad-manifest", "def setup(ext):\n    pass\n", manifest="name = [\n")
    write_extension(tmp_path / "user", "hook-raises", '''
        def setup(ext):
            @ext.adjust_request
            def adjust(request, settings):
                raise ZeroDivisionError("oops")
    ''')
    manager = manager_for(tmp_path)
    states = {item.name: item for item in manager.load()}
    assert states["import-error"].status == "failed" and "cannot start" in states["import-error"].error
    assert "setup" in states["no-setup"].error
    assert "TOML" in states["bad-manifest"].error
    assert states["hook-raises"].status == "active"
    result = manager.run_job(small(), JobControl(), engine_runner(services))
    assert len(result.images) == 1 and result.images[0].image.size == (64, 64)
    assert states["hook-raises"].status == "failed" and "ZeroDivisionError" in states["hook-raises"].error


def test_a_failed_cell_of_a_sweep_does_not_fail_the_job(tmp_path, services):
    write_extension(tmp_path / "user", "recorder", RECORDER)
    manager = manager_for(tmp_path)
    manager.load()
    request = small(extensions={"recorder": {"cfgs": [3.0, 999.0]}})
    result = manager.run_job(request, JobControl(), engine_runner(services))
    assert len(result.images) == 1
    errors = [c for c in __import__("sfumato_extension_recorder").CALLS if c[0] == "end"][-1][2]
    assert errors[0] is None and "cfg_scale" in errors[1]


def test_disable_is_remembered_and_enable_loads_again(tmp_path):
    write_extension(tmp_path / "user", "recorder", RECORDER)
    manager = manager_for(tmp_path)
    manager.load()
    manager.set_enabled("recorder", False)
    again = manager_for(tmp_path)
    [item] = again.load()
    assert item.status == "disabled" and not again.active()
    again.set_enabled("recorder", True)
    assert again.get("recorder").status == "active"


def test_manifest_rejects_unsafe_entries(tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "extension.toml").write_text('name = "x"\nentry = "../../evil.py"\n')
    with pytest.raises(ExtensionError, match="inside"):
        Manifest.read(folder)
    (folder / "extension.toml").write_text('name = "bad name!"\n')
    with pytest.raises(ExtensionError, match="name"):
        Manifest.read(folder)


def git_repository(root: Path) -> Path:
    folder = write_extension(root, "repo-src", RECORDER.replace("recorder", "gitext"),
                             manifest='name = "gitext"\nversion = "0.1"\n')
    for command in (["git", "init", "-q"], ["git", "add", "."],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first"]):
        subprocess.run(command, cwd=folder, check=True)
    return folder


def test_install_from_a_local_git_repository_then_remove(tmp_path):
    source = git_repository(tmp_path / "src")
    user_dir = tmp_path / "user"
    report = install(str(source), user_dir)
    assert report.name == "gitext" and (user_dir / "gitext" / "extension.py").is_file()
    manager = manager_for(tmp_path)
    item = manager.load()[0]
    assert item.status == "active" and item.remote and item.remote.startswith("file://")
    with pytest.raises(ExtensionError, match="already installed"):
        install(source.as_uri(), user_dir)
    remove(item)
    assert not (user_dir / "gitext").exists()
    assert not [p for p in user_dir.iterdir() if p.name.startswith(".installing")]


def test_install_is_refused_when_the_studio_is_exposed():
    with pytest.raises(ExtensionError, match="enable-insecure-extension-access"):
        check_allowed(exposed=True, insecure_access=False)
    check_allowed(exposed=True, insecure_access=True)
    check_allowed(exposed=False, insecure_access=False)


def test_bad_sources_are_refused(tmp_path):
    for source in ("", "--upload-pack=evil", "not a url or folder"):
        with pytest.raises(ExtensionError):
            normalise_source(source)


def test_the_documented_example_extension_works(tmp_path, services):
    # EXTENSIONS.md is what authors copy: its manifest and code must load and do what the text says.
    import re

    from modules.runtime.config import ROOT

    text = (ROOT / "EXTENSIONS.md").read_text(encoding="utf-8")
    toml = re.search(r"```toml\n(.*?)```", text, re.S).group(1).replace('requires = ["colorama>=0.4"]', "")
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    folder = tmp_path / "user" / "hello"
    folder.mkdir(parents=True)
    (folder / "extension.toml").write_text(toml)
    (folder / "extension.py").write_text(code)
    manager = manager_for(tmp_path)
    [item] = manager.load()
    assert item.status == "active", item.error
    assert [name for name, _build in manager.controls("txt2img")] == ["hello"]
    result = manager.run_job(small(extensions={"hello": {"word": "sunset"}}), JobControl(), engine_runner(services))
    assert result.images[0].infotext.startswith("a red circle, sunset\n")
