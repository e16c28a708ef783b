"""Interrogate: from an image to a prompt, as A1111's "Interrogate CLIP" does.

A captioning model (BLIP, or another image-to-text model transformers loads) writes a sentence about the image; a
CLIP model then ranks short lists of terms (mediums, movements, artists, flavours) against the image and the best
ones are appended. Both models are read from local folders under ``models/`` only (see ``folders``), and the work
runs as the ``interrogate`` kind of job on the one queue (see ``kind``).
"""
