"""Build the CLIP BPE tokenizer files offline.

Model hubs are out of reach, but the original CLIP byte-pair merges ship inside the PyPI package
``open_clip_torch`` (as ``bpe_simple_vocab_16e6.txt.gz``). From those merges we rebuild exactly the
``vocab.json`` + ``merges.txt`` pair that ``transformers.CLIPTokenizer`` reads, so every model family
(SD 1.x, SD 2.x, SDXL) gets its real tokenizer without a download.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import tempfile
from pathlib import Path

# The first line of the merges file is a header, and CLIP keeps the merges that bring the vocabulary
# to 49,408 entries: 256 bytes, 256 end-of-word bytes, 48,894 merges and two special tokens.
_MERGE_COUNT = 49152 - 256 - 2
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 49408


class TokenizerFilesMissing(RuntimeError):
    """The CLIP merges file could not be found (open_clip_torch is not installed)."""


def bpe_merges_path() -> Path:
    """Locate open_clip's merges file without importing open_clip (its import needs torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerFilesMissing(
            "The CLIP vocabulary ships in the PyPI package open_clip_torch; install it with "
            "`pip install --no-deps open_clip_torch` (launch.py does this for you)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise TokenizerFilesMissing(f"{path} is missing from the open_clip_torch package")
    return path


def _byte_alphabet() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def read_merges(path: Path | None = None) -> list[str]:
    """The CLIP merges, one "a b" pair per entry, in rank order."""
    with gzip.open(path or bpe_merges_path(), "rt", encoding="utf-8") as stream:
        lines = stream.read().split("\n")
    return lines[1 : _MERGE_COUNT + 1]


def build_vocab(merges: list[str]) -> dict[str, int]:
    """Token -> id, in CLIP's order: bytes, end-of-word bytes, merged pairs, then the two special tokens."""
    alphabet = _byte_alphabet()
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet]
    tokens += [merge.replace(" ", "") for merge in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def write_tokenizer_files(folder: Path, pad_token: str = EOS_TOKEN) -> Path:
    """Write a CLIPTokenizer folder (vocab.json, merges.txt, configs) into ``folder``, atomically.

    ``pad_token`` differs by family: SD 1.x pads with ``<|endoftext|>``, the OpenCLIP encoders of SD 2.x and
    SDXL's second encoder pad with ``!``.
    """
    merges = read_merges()
    vocab = build_vocab(merges)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=folder.parent))
    (staging / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (staging / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": pad_token}
    (staging / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **special}
    (staging / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    if folder.exists():
        # Another process may have built it meanwhile; the content is identical, so keep theirs.
        _remove_tree(staging)
        return folder
    os.replace(staging, folder)
    return folder


def _remove_tree(path: Path) -> None:
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def load_clip_tokenizer(pad_token: str = EOS_TOKEN, cache_dir: Path | None = None):
    """A ready ``CLIPTokenizer``, built from open_clip's merges and cached on disk."""
    from transformers import CLIPTokenizer

    cache_dir = Path(cache_dir or Path(tempfile.gettempdir()) / "sfumato-tokenizers")
    name = "clip-pad-eos" if pad_token == EOS_TOKEN else "clip-pad-bang"
    folder = cache_dir / name
    if not (folder / "vocab.json").is_file():
        write_tokenizer_files(folder, pad_token=pad_token)
    return CLIPTokenizer.from_pretrained(str(folder))
