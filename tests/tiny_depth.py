"""Tiny randomly initialised depth models saved as Hugging Face folders, the way a user puts a real one under
``models/ControlNet/annotators/<folder>/``: the code that loads and runs them is the subject, not their weights.
Built locally (no network) in well under a second."""

from __future__ import annotations

from pathlib import Path

ANNOTATORS = Path("ControlNet") / "annotators"


def save_tiny_dpt(models_dir: Path, folder: str = "dpt-hybrid-midas", seed: int = 0, hybrid: bool = True) -> Path:
    """A tiny DPT with its image processor, saved under ``models_dir/ControlNet/annotators/folder``: with
    ``hybrid``, a BiT stem before the ViT as in ``Intel/dpt-hybrid-midas``; without, a plain ViT as in
    ``Intel/dpt-large``."""
    import torch
    from transformers import BitConfig, DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    target = Path(models_dir) / ANNOTATORS / folder
    torch.manual_seed(seed)
    shared = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 37,
              "backbone_out_indices": [0, 1, 2, 3], "neck_hidden_sizes": [8, 16, 32, 32], "fusion_hidden_size": 16,
              "initializer_range": 0.5}
    if hybrid:  # the BiT's third stage (32 channels, 1/16 of the size) becomes the ViT's tokens
        stem = BitConfig(global_padding="same", layer_type="bottleneck", depths=[1, 1, 1], hidden_sizes=[8, 16, 32],
                         out_features=["stage1", "stage2", "stage3"], embedding_dynamic_padding=True, num_groups=2)
        config = DPTConfig(is_hybrid=True, backbone_config=stem, backbone_featmap_shape=[1, 32, 4, 4],
                           image_size=64, patch_size=16, reassemble_factors=[1, 1, 1, 0.5], readout_type="project",
                           **shared)
        size = 64
    else:
        config = DPTConfig(image_size=32, patch_size=8, reassemble_factors=[4, 2, 1, 0.5], **shared)
        size = 32
    DPTForDepthEstimation(config).eval().save_pretrained(target)
    DPTImageProcessor(size={"height": size, "width": size}).save_pretrained(target)
    return target


def save_tiny_depth_anything(models_dir: Path, folder: str = "depth-anything-small", seed: int = 0) -> Path:
    """A tiny Depth Anything (a DINOv2 backbone and a DPT head), with the aspect-keeping image processor of the
    real ones, saved under ``models_dir/ControlNet/annotators/folder``."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    target = Path(models_dir) / ANNOTATORS / folder
    torch.manual_seed(seed)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
                            image_size=28, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, patch_size=14,
                                 neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
                                 initializer_range=0.5)
    DepthAnythingForDepthEstimation(config).eval().save_pretrained(target)
    DPTImageProcessor(size={"height": 28, "width": 28}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      resample=3).save_pretrained(target)
    return target


def save_tiny_zoedepth(models_dir: Path, folder: str = "zoedepth-nyu", seed: int = 0) -> Path:
    """A tiny ZoeDepth (a BEiT backbone, a DPT neck and a metric bins head, as ``Intel/zoedepth-nyu``) with its
    padding image processor, saved under ``models_dir/ControlNet/annotators/folder``."""
    import torch
    from transformers import BeitConfig, ZoeDepthConfig, ZoeDepthForDepthEstimation, ZoeDepthImageProcessor

    target = Path(models_dir) / ANNOTATORS / folder
    torch.manual_seed(seed)
    backbone = BeitConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                          intermediate_size=37, out_features=["stage1", "stage2", "stage3", "stage4"],
                          reshape_hidden_states=False, use_relative_position_bias=True)
    config = ZoeDepthConfig(backbone_config=backbone, backbone_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                            fusion_hidden_size=16, bottleneck_features=16, num_attractors=[4, 4, 4, 4],
                            bin_embedding_dim=16, num_relative_features=8, reassemble_factors=[4, 2, 1, 0.5],
                            bin_configurations=[{"n_bins": 8, "min_depth": 1e-3, "max_depth": 10.0, "name": "nyu"}],
                            readout_type="project", num_patch_transformer_layers=1, patch_transformer_hidden_size=16,
                            patch_transformer_intermediate_size=16, patch_transformer_num_attention_heads=2,
                            initializer_range=0.5)
    ZoeDepthForDepthEstimation(config).eval().save_pretrained(target)
    ZoeDepthImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=True,
                           ensure_multiple_of=8).save_pretrained(target)
    return target
