"""Sfumato's engine: request types, models, pipelines, generation, storage and jobs.

Importing this package does no work; every module loads its heavy dependencies (torch, diffusers) only where
it needs them.
"""
