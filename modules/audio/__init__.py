"""The audio engine behind the Audio tab and the audio APIs: text-to-audio (Stable Audio, AudioLDM2) and speech
(VITS / MMS-TTS) from model folders under ``models/audio/``, queued as jobs of kind ``audio``.

Front ends import ``request`` (the typed request), ``encode`` (formats, reading parameters back) and ``pictures``;
the composition root wires ``kind``. Nothing is loaded and torch is not imported until a job runs.
"""
