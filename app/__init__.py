"""Front ends: the Gradio studio (``app.ui``) and the server that launches it (``app.server``)."""
