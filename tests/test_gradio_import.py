"""Issue 18, start-up: the studio imports Gradio without the stub files Gradio rewrites on every import (about half
of ``import gradio``), and Gradio still works as usual."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Defines a Gradio component in its own module file, as a custom component's author does; Gradio's metaclass then
# (re)writes a .pyi stub beside that file unless the studio's import skipped it.
SCRIPT = textwrap.dedent("""
    import importlib, json, sys
    sys.path[:0] = [{root!r}, {folder!r}]
    if {quick!r}:
        from app.gradio_import import import_gradio
        gr = import_gradio()
    else:
        import gradio as gr
    import my_component
    box = my_component.Shout(value="hi")
    with gr.Blocks() as demo:
        gr.Textbox(label="prompt")
        box.render()
    print(json.dumps({{"stub": (my_component.Path(my_component.__file__).with_suffix(".pyi")).exists(),
                       "hooks": [type(f).__name__ for f in sys.meta_path],
                       "value": box.value, "blocks": len(demo.blocks)}}))
""")

COMPONENT = textwrap.dedent("""
    from pathlib import Path

    import gradio as gr


    class Shout(gr.Textbox):
        def preprocess(self, payload):
            return None if payload is None else str(payload).upper()
""")


def _run(tmp_path: Path, quick: bool) -> dict:
    folder = tmp_path / ("quick" if quick else "plain")
    folder.mkdir()
    (folder / "my_component.py").write_text(COMPONENT, encoding="utf-8")
    script = SCRIPT.format(root=str(ROOT), folder=str(folder), quick=quick)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={"GRADIO_ANALYTICS_ENABLED": "False", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_studio_imports_gradio_without_rewriting_stub_files(tmp_path):
    plain = _run(tmp_path, quick=False)
    quick = _run(tmp_path, quick=True)
    assert plain["stub"], "plain Gradio writes the .pyi stub: if it stopped, app/gradio_import.py can go"
    assert not quick["stub"]
    # Gradio works the same: the component keeps its value, the page gets its blocks, and the hook is gone.
    assert quick["value"] == plain["value"] == "hi"
    assert quick["blocks"] == plain["blocks"] >= 2
    assert "_StubSkippingFinder" not in quick["hooks"]


def test_import_gradio_returns_the_module_already_imported():
    import gradio

    from app.gradio_import import import_gradio

    assert import_gradio() is gradio
