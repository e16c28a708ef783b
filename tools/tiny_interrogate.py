"""Tiny random-weight interrogate models in the transformers layout users download, for tests: a BLIP captioner
and a CLIP model, a few hundred kilobytes to ten megabytes, built offline.

BLIP reads a BERT WordPiece vocabulary; a small one is trained here with the ``tokenizers`` library on a few
sentences, so no download is needed. CLIP reuses the studio's own offline CLIP tokenizer (``clip_vocab``). The
weights are random, so captions are gibberish made of that vocabulary, but every piece (processor, generate, the
feature projections) is the real one.
"""

from __future__ import annotations

from pathlib import Path

BLIP_WORDS = ("a photo of a red circle on a blue background a cat sitting on the grass with a dog "
              "a painting of a house by the sea under the sky a drawing of trees and mountains in the snow")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]


def tiny_wordpiece_vocab(size: int = 120) -> dict[str, int]:
    """A lower-case WordPiece vocabulary (BERT's special tokens plus ``[DEC]``, BLIP's start of a caption)."""
    from tokenizers import BertWordPieceTokenizer

    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator([BLIP_WORDS] * 4, vocab_size=size, min_frequency=1, special_tokens=SPECIAL_TOKENS,
                                show_progress=False)
    return trainer.get_vocab()


def save_tiny_blip(folder: Path, seed: int = 0, image_size: int = 32) -> Path:
    """A ``BlipForConditionalGeneration`` with its ``BlipProcessor``, saved into ``folder``."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tokenizer = BertTokenizer(vocab=tiny_wordpiece_vocab(), bos_token="[DEC]")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
                              tokenizer=tokenizer)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=64, encoder_hidden_size=32,
                bos_token_id=tokenizer.convert_tokens_to_ids("[DEC]"), pad_token_id=tokenizer.pad_token_id,
                sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  image_size=image_size, patch_size=8)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=32))
    return _save(model.eval(), processor, folder)


def save_tiny_clip(folder: Path, seed: int = 0, image_size: int = 32) -> Path:
    """A ``CLIPModel`` with its ``CLIPProcessor`` (the real CLIP vocabulary), saved into ``folder``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from modules.models.clip_vocab import VOCAB_SIZE, load_clip_tokenizer

    processor = CLIPProcessor(image_processor=CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}),
        tokenizer=load_clip_tokenizer())
    text = dict(vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  image_size=image_size, patch_size=8)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    return _save(model.eval(), processor, folder)


def _save(model, processor, folder: Path) -> Path:  # noqa: ANN001 - any transformers model and processor
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


def save_tiny_git(folder: Path, seed: int = 0, image_size: int = 32) -> Path:
    """A ``GitForCausalLM`` (a decoder-only captioner transformers loads as image-text-to-text, unlike BLIP) with
    its ``GitProcessor``, saved into ``folder``: shows that other captioners than BLIP work."""
    import torch
    from transformers import BertTokenizer, CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    tokenizer = BertTokenizer(vocab=tiny_wordpiece_vocab())
    processor = GitProcessor(image_processor=CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  image_size=image_size, patch_size=8)
    config = GitConfig(vision_config=vision, vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
                       num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                       bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return _save(GitForCausalLM(config).eval(), processor, folder)
