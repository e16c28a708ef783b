"""The video kind of work: text-to-video, image-to-video and video-to-video through diffusers' video pipelines.

A request (``request``) names a video model from ``registry`` (AnimateDiff motion adapters used with the image
checkpoints, Stable Video Diffusion and Wan folders); ``kind`` resolves each family's defaults at submission, runs
the pipeline on the worker (``generate``) and writes the frames as MP4 / WebM / GIF / WebP with their parameters
in the file (``encode``).
"""
