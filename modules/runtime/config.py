"""The studio's configuration: command-line flags resolved into one immutable object.

launch.py parses the command line and builds an ``AppConfig``; everything else receives it (or the parts it
needs) explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modules.image.request import Limits

ROOT = Path(__file__).resolve().parents[2]
MODEL_SUBFOLDERS = ("Stable-diffusion", "VAE", "Lora", "ESRGAN", "ControlNet", "embeddings", "BLIP", "interrogate")


@dataclass(frozen=True)
class AppConfig:
    models_dir: Path = ROOT / "models"
    ckpt_dirs: tuple[Path, ...] = ()
    outdir: Path = ROOT / "outputs"
    data_dir: Path = ROOT / "data"
    default_ckpt: str | None = None
    device: str | None = None
    precision: str = "auto"
    no_half: bool = False
    medvram: bool = False
    lowvram: bool = False
    attention_slicing: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False
    threads: int | None = None  # torch's CPU threads (--threads); None leaves torch's own choice alone
    max_loaded_models: int = 1
    quantize: str = "none"  # --quantize nf4|int8: bitsandbytes UNet / transformer on CUDA (modules.models.quantization)
    compile: bool = False  # --compile: torch.compile of the UNet / transformer (modules.models.speedups)
    batch_images: int = 16  # compatible waiting image jobs run together, up to this many images (1 = never)
    batch_window: float = 0.0  # seconds a batchable job waits for others to arrive before it starts
    preview_interval: int = 5
    limits: Limits = field(default_factory=Limits)
    # serving
    port: int = 7860
    listen: bool = False
    share: bool = False
    gradio_auth: tuple[tuple[str, str], ...] = ()
    share_without_auth: bool = False
    listen_without_auth: bool = False  # --listen with an open web UI, accepted explicitly
    # the REST API
    api: bool = False  # serve the API on the UI's server
    nowebui: bool = False  # serve only the API
    api_auth: tuple[tuple[str, str], ...] = ()  # HTTP Basic pairs for the API
    api_keys_file: Path | None = None  # JSON file of API keys and tiers
    cors_allow_origins: tuple[str, ...] = ()  # other origins whose pages may call the API
    max_body_bytes: int = 64 * 1024 * 1024  # --max-body-mb: larger request bodies get 413, on every route
    # extensions
    user_extensions_dir: Path | None = None  # --extensions-dir; None = <data-dir>/extensions
    enable_insecure_extension_access: bool = False

    @property
    def checkpoint_dir(self) -> Path:
        return self.models_dir / "Stable-diffusion"

    @property
    def styles_file(self) -> Path:
        return self.data_dir / "styles.csv"

    @property
    def compile_cache_dir(self) -> Path:
        """torch.compile's caches (Inductor's), so a restart reuses compiled code (``--compile``)."""
        return self.data_dir / "compile-cache"

    @property
    def settings_file(self) -> Path:
        return self.data_dir / "settings.json"

    @property
    def extensions_dir(self) -> Path:
        """The user's extensions (installed from the Extensions tab); the built-in ones live in ``extensions/``."""
        return self.user_extensions_dir or self.data_dir / "extensions"

    @property
    def jobs_db(self) -> Path:
        """The persistent job queue (its files go to ``jobs/`` beside it)."""
        return self.data_dir / "jobs.sqlite3"

    @property
    def hash_cache_file(self) -> Path:
        return self.data_dir / "cache" / "hashes.json"

    @property
    def config_cache_dir(self) -> Path:
        return self.data_dir / "cache" / "model-configs"

    @property
    def serves_api(self) -> bool:
        return self.api or self.nowebui

    @property
    def server_name(self) -> str:
        return "0.0.0.0" if self.listen else "127.0.0.1"


def parse_auth(text: str | None) -> tuple[tuple[str, str], ...]:
    """``user:pass,user2:pass2`` (A1111's --gradio-auth format) -> pairs; a malformed entry is an error."""
    pairs = []
    for entry in (text or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"bad credentials {entry!r}: expected user:password")
        pairs.append((user, password))
    return tuple(pairs)
