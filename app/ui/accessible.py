"""Names for what Gradio leaves unnamed: icon buttons (random seed, reuse seed, refresh) and text boxes that carry a
copy button.

The Gradio in use has no tooltip or aria-label parameter on ``gr.Button``, and a text box built with
``buttons=["copy"]`` puts the Copy button first inside its ``<label>``, so the label names the button and the box
itself has no name. A screen reader, a hovering user and a browser test all need those names, so a small script in
the page's ``<head>`` sets ``title`` and ``aria-label`` on every button marked with ``icon_button`` and names such
text boxes after their visible label, again whenever Gradio re-renders. The same script makes Ctrl+Enter in a tab's
text box press its Generate button, as A1111 users expect, and says when a slider's number box put a typed value
back into its range: Gradio does that silently when the box loses focus, so 500 steps became 150 unnoticed.
"""

from __future__ import annotations

import json
from typing import Any

TIP_CLASS = "sf-tip"
# A part of a tab whose text boxes are not the tab's prompt (the style editor): Ctrl+Enter there does not generate.
NO_GENERATE_CLASS = "sf-no-generate"
NOTICE_CLASS = "sf-notice"  # where the page says a typed value was put back into its slider's range
NOTICE_MS = 8000
# An upload whose file the page checks before handing it on: the inpaint editor decodes its image in the browser
# and, for a file that is not an image, only throws a page error and shows nothing.
CHECKED_UPLOAD_CLASS = "sf-checked-upload"
SLIDER_BOX = "number input for "  # how Gradio names a slider's number box: "number input for <label>"
# The icon buttons' glyphs. Not the dice and arrows emoji other studios use: a browser on a machine without an
# emoji font (Debian's Chromium as installed, many Linux desktops) draws those as empty boxes. These are in DejaVu
# Sans, which such machines do have, and in the symbol fonts of Windows and macOS.
REFRESH_GLYPH = "\u21bb"  # ↻
DICE_GLYPH = "\u2684"  # ⚄
REUSE_GLYPH = "\u267b"  # ♻ (text presentation, no emoji selector)
# The hover text and accessible name of each icon button, by key (the button's ``sf-tip-<key>`` class).
TOOLTIPS = {
    "refresh-models": "Refresh the checkpoint and VAE lists",
    "random-seed": "Random seed (-1)",
    "reuse-seed": "Reuse the seed of the selected image",
    "random-subseed": "Random variation seed (-1)",
    "refresh-upscalers": "Refresh the upscaler lists",
    "refresh-controlnets": "Refresh the ControlNet model list",
    "refresh-video": "Refresh the video model and checkpoint lists",
    "refresh-audio-models": "Refresh the audio model list (models/audio)",
}


def icon_button(key: str) -> dict[str, Any]:
    """``gr.Button`` keyword arguments that give an icon button its tooltip and accessible name."""
    if key not in TOOLTIPS:
        raise KeyError(f"no tooltip for {key!r}")
    return {"elem_classes": [TIP_CLASS, f"{TIP_CLASS}-{key}"]}


def head_script() -> str:
    """The ``<script>`` for the page's head."""
    return f"""<script>
(() => {{
  const tips = {json.dumps(TOOLTIPS, ensure_ascii=False)};
  const apply = () => {{
    for (const [key, text] of Object.entries(tips)) {{
      for (const node of document.querySelectorAll(".{TIP_CLASS}-" + key)) {{
        const button = node.matches("button") ? node : node.querySelector("button") || node;
        if (button.getAttribute("aria-label") !== text) {{
          button.setAttribute("aria-label", text);
          button.setAttribute("title", text);
        }}
      }}
    }}
    for (const label of document.querySelectorAll("label")) {{
      const field = label.querySelector("textarea, input[type=text]");
      const info = label.querySelector("[data-testid=block-info]");
      if (field && info && label.querySelector("button") && !field.hasAttribute("aria-label")) {{
        field.setAttribute("aria-label", info.textContent.trim());
      }}
    }}
  }};
  const start = () => {{
    apply();
    let pending = false;
    new MutationObserver(() => {{
      if (!pending) {{ pending = true; requestAnimationFrame(() => {{ pending = false; apply(); }}); }}
    }}).observe(document.body, {{ childList: true, subtree: true }});
  }};
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
  // Ctrl+Enter (Cmd+Enter on a Mac) in a tab's text box presses that tab's Generate (or Upscale) button, as in A1111.
  document.addEventListener("keydown", (event) => {{
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
    const panel = event.target.closest && event.target.closest("[role=tabpanel]");
    if (!panel || event.target.closest(".{NO_GENERATE_CLASS}")) return;
    const button = [...panel.querySelectorAll("button")].find(
      (node) => node.offsetParent !== null && ["Generate", "Upscale"].includes(node.textContent.trim()));
    if (button) {{ event.preventDefault(); button.click(); }}
  }});
  // Listening in the capture phase runs before Gradio's own blur handler clamps the value, so both are known.
  document.addEventListener("blur", (event) => {{
    const box = event.target;
    const name = box instanceof HTMLInputElement && box.type === "number" && box.getAttribute("aria-label");
    if (!name || !name.startsWith("{SLIDER_BOX}") || box.value === "") return;
    const value = Number(box.value), low = Number(box.min), high = Number(box.max);
    if (Number.isNaN(value) || !box.max || (value >= low && value <= high)) return;
    const kept = value > high ? high : low;
    const why = value > high ? "over this studio's limit of " + high : "under the minimum of " + low;
    notice(name.slice({len(SLIDER_BOX)}) + " " + value + " is " + why + ": set to " + kept + ".");
  }}, true);
  // A file for a checked upload is decoded first; one that is not an image is named and dropped, and a good one
  // is handed on with a fresh change event (the original is held back in the capture phase).
  document.addEventListener("change", (event) => {{
    const input = event.target;
    if (event.sfChecked || !(input instanceof HTMLInputElement) || input.type !== "file") return;
    const area = input.closest(".{CHECKED_UPLOAD_CLASS}");
    if (!area || !input.files || !input.files.length) return;
    event.stopImmediatePropagation();
    const files = [...input.files];
    Promise.allSettled(files.map((file) => createImageBitmap(file))).then((results) => {{
      const bad = files.filter((_file, index) => results[index].status === "rejected");
      if (bad.length) {{
        const label = (area.querySelector("[data-testid=block-label]") || {{}}).textContent || "Image";
        notice(label.trim() + ": " + bad.map((file) => file.name).join(", ") + " is not a readable image.");
        input.value = "";
        return;
      }}
      const again = new Event("change", {{ bubbles: true }});
      again.sfChecked = true;
      input.dispatchEvent(again);
    }});
  }}, true);
  const notice = (text) => {{
    let area = document.querySelector(".{NOTICE_CLASS}");
    if (!area) {{
      area = document.createElement("div");
      area.className = "{NOTICE_CLASS}";
      area.setAttribute("role", "status");
      area.setAttribute("aria-live", "polite");
      document.body.appendChild(area);
    }}
    const line = document.createElement("div");
    line.textContent = text;
    area.appendChild(line);
    setTimeout(() => line.remove(), {NOTICE_MS});
  }};
}})();
</script>"""
