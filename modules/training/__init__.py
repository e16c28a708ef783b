"""Fine-tuning on the user's own images (LoRA, DreamBooth, textual inversion) as the ``train`` kind of job."""
