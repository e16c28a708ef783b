"""Launch the Gradio studio: bind address, login, and the rules for a public ``--share`` link.

A share link puts the studio (and the machine's GPU and disk) on the public internet, so it is refused unless a
login is configured or the user explicitly opted out with ``share_without_auth``. When the link cannot be made
(no network, a blocked tunnel binary), the studio keeps serving locally and says so, rather than exiting.
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from app.ui import CSS, build_ui

log = logging.getLogger(__name__)

SHARE_REFUSED = (
    "Refusing to create a public --share link without a login: anyone with the link could use this machine. "
    "Set --gradio-auth user:password, or pass --share-without-auth if you really want an open link."
)


def build_app(services: Any) -> gr.Blocks:
    """The studio's Blocks without launching it (for tests and for mounting into another server)."""
    return build_ui(services)


def check_share(config: Any) -> bool:
    """Whether to ask for a public link; ``SystemExit`` with the reason when sharing would be unsafe."""
    if not config.share:
        return False
    if not config.gradio_auth and not config.share_without_auth:
        raise SystemExit(SHARE_REFUSED)
    return True


def launch_options(services: Any, config: Any) -> dict[str, Any]:
    """``Blocks.launch`` keyword arguments shared by the first launch and a local-only relaunch."""
    return {
        "server_name": config.server_name,
        "server_port": config.port,
        "auth": list(config.gradio_auth) or None,
        "allowed_paths": [str(config.outdir)],  # the gallery shows the saved files, infotext included
        "css": CSS,
        "prevent_thread_lock": True,
    }


def serve(services: Any, config: Any) -> None:
    """Build the UI, start the worker, and serve until interrupted; the worker stops on the way out."""
    share = check_share(config)
    blocks = build_app(services)
    services.start()
    try:
        _launch(blocks, launch_options(services, config), share)
        blocks.block_thread()
    finally:
        services.stop()


def _launch(blocks: gr.Blocks, options: dict[str, Any], share: bool) -> None:
    if not share:
        blocks.launch(share=False, **options)
        return
    try:
        _app, local_url, share_url = blocks.launch(share=True, **options)
    except Exception as error:  # some Gradio versions raise when the tunnel fails; serve locally instead
        log.warning("could not create a public link: %s", error)
        blocks.close()
        _app, local_url, share_url = blocks.launch(share=False, **options)
    if not share_url:
        message = (f"Could not create a public --share link (no network, or the tunnel was blocked). "
                   f"Still serving locally at {local_url}.")
        print(message, flush=True)
