"""Tiny NSFW checkers for the tests (not tests themselves): the real classes, random weights, a fixed verdict.

``save_tiny_sd_checker`` writes diffusers' ``StableDiffusionSafetyChecker`` on a small ``CLIPConfig`` with its
``CLIPImageProcessor``, as an SD 1.x repository's ``safety_checker/`` + ``feature_extractor/`` hold them. Its
verdict is decided by the concept thresholds: a cosine similarity lies in [-1, 1], so a threshold of -10 flags
every image and one of +10 none. ``save_tiny_classifier`` writes a small ViT image classifier with ``normal`` and
``nsfw`` labels whose output bias decides the same way.
"""

from __future__ import annotations

from pathlib import Path


def save_tiny_sd_checker(folder: Path, *, flags: bool, seed: int = 0) -> Path:
    """A ``StableDiffusionSafetyChecker`` in ``folder`` (its preprocessor config in ``folder/feature_extractor``)
    that flags every image (``flags``) or none."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 100, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )
    model = StableDiffusionSafetyChecker(config).eval()
    with torch.no_grad():
        model.concept_embeds.normal_()
        model.special_care_embeds.normal_()
        model.concept_embeds_weights.fill_(-10.0 if flags else 10.0)
        model.special_care_embeds_weights.fill_(10.0)  # never "special care": no adjustment
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(folder / "feature_extractor")
    return folder


def save_tiny_classifier(folder: Path, *, flags: bool, seed: int = 0) -> Path:
    """A ViT image classifier labelled normal/nsfw whose answer is ``nsfw`` for every image (``flags``) or none."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       image_size=32, patch_size=8, id2label={0: "normal", 1: "nsfw"},
                       label2id={"normal": 0, "nsfw": 1})
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 20.0 if flags else -20.0]))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
