"""Where the compiled caption model is kept, and whether a kept one can be trusted.

A cache is a folder named by its key (OpenVINO's version, the precision, the shapes, the
format of the conversion and the checkpoint's sha256) holding the two compiled pieces and a
manifest of the key and of each file. Reading 1.8 GB of weights and graphs to hash them took
6 of a warm start's 8 seconds, so a start trusts a file whose size, mtime_ns and inode are
those recorded when it was hashed, and hashes again only a file where any of them differs;
`htx model verify` hashes everything. The checkpoint's own digest is kept the same way, in
`checkpoint.json` beside the caches, so the key still names the very checkpoint compiled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("htx.caption")

# Bumped whenever blip_split or the conversion changes what the compiled files compute.
# 3: any batch size (a lone photo runs alone); files recorded with their size, mtime and inode.
# 4: the weights of a piece run in half precision kept in float16.
FORMAT = 4
CACHE_FOLDER = "htx-compiled"  # inside the model's folder (or the fallback) every cache lives in
MANIFEST = "manifest.json"
CHECKPOINT_RECORD = "checkpoint.json"
FILES = ("encoder.xml", "encoder.bin", "step.xml", "step.bin")


@dataclass(frozen=True)
class Precision:
    """The precision of each compiled piece: caption.dtype names."""

    encoder: str
    step: str

    def __str__(self) -> str:
        """"bfloat16+float16" (encoder+decoder step), or one name when both agree."""
        return self.encoder if self.encoder == self.step else f"{self.encoder}+{self.step}"


@dataclass(frozen=True)
class Shapes:
    """What the compiled graphs are fixed to (the batch is not: any size runs); part of the key."""

    input_size: int
    max_new_tokens: int


def import_openvino() -> Any:
    """The openvino module, without its usage telemetry.

    Importing openvino (and converting a model) reports usage to Google Analytics through the
    openvino-telemetry package, and with no consent file in the home folder that counts as
    consent. A server must not phone home on its own: OpenVINO runs without that package, and
    the import of a module set to None in sys.modules fails, so OpenVINO uses its own stand-in.
    """
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    import openvino

    return openvino


def openvino_version() -> str:
    return import_openvino().get_version().split("-")[0]


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _signature(path: Path) -> dict[str, int]:
    """What tells, without reading it, that a file is not the one hashed before."""
    status = path.stat()
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns, "inode": status.st_ino}


def file_record(path: Path) -> dict[str, Any]:
    """A file's sha256 and signature, as a manifest keeps them."""
    return {"sha256": file_digest(path), **_signature(path)}


def _unchanged(path: Path, record: Any, *, verify: bool) -> bool:
    """Whether `path` is still the file of `record`: by its signature, or (when that differs,
    or with `verify`) by its sha256. OSError when it cannot be read."""
    if not isinstance(record, dict):
        return False
    if not verify and _signature(path) == {key: record.get(key) for key in ("size", "mtime_ns", "inode")}:
        return True
    return file_digest(path) == record.get("sha256")


def _checkpoint_files(folder: Path) -> list[str]:
    """The files `from_pretrained` builds the model from: config and weights."""
    return sorted(
        path.name
        for path in folder.iterdir()
        if path.name == "config.json" or path.suffix == ".safetensors" or path.name.startswith("pytorch_model")
    )


def checkpoint_digest(folder: Path) -> str:
    """sha256 over the checkpoint's files, each read whole."""
    return _digest_of({name: file_digest(folder / name) for name in _checkpoint_files(folder)})


def _digest_of(file_digests: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(file_digests):
        digest.update(name.encode() + b"\0")
        digest.update(file_digests[name].encode())
    return digest.hexdigest()


def known_checkpoint_digest(folder: Path, cache_root: Path, *, verify: bool = False) -> str:
    """checkpoint_digest, read from `cache_root`'s record where no file changed since it was
    made (or with `verify`, every file hashed again); the record is refreshed where needed."""
    record_path = cache_root / CHECKPOINT_RECORD
    try:
        recorded = json.loads(record_path.read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):
        recorded = {}
    names = _checkpoint_files(folder)
    records: dict[str, Any] = {}
    for name in names:
        entry = recorded.get(name) if isinstance(recorded, dict) else None
        if isinstance(entry, dict) and _unchanged(folder / name, entry, verify=verify):
            records[name] = {**entry, **_signature(folder / name)}
        else:
            records[name] = file_record(folder / name)
    if records != recorded:
        _write_atomically(record_path, json.dumps({"files": records}, indent=2))
    return _digest_of({name: entry["sha256"] for name, entry in records.items()})


def _write_atomically(path: Path, text: str) -> None:
    """Best effort: a record that cannot be written only costs the next start a re-hash."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}")
    try:
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
    except OSError as error:
        log.debug("could not write %s: %s", path, error)
        temporary.unlink(missing_ok=True)


def cache_name(digest: str, precision: Precision, shapes: Shapes) -> str:
    return f"openvino-{openvino_version()}-{precision}-s{shapes.input_size}-t{shapes.max_new_tokens}-f{FORMAT}-{digest[:16]}"


def cache_problem(folder: Path, expected: dict[str, Any], *, verify: bool = False) -> str | None:
    """Why the cache in `folder` cannot be used as it is, or None when it can. `verify`:
    every file hashed again, whatever its signature says."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no compiled model yet"
    except (OSError, ValueError) as error:
        return f"unreadable manifest ({error})"
    if not isinstance(manifest, dict):
        return "unreadable manifest (not an object)"
    for key, value in expected.items():
        if manifest.get(key) != value:
            return f"made for another {key}"
    files = manifest.get("files")
    if not isinstance(files, dict):
        return "unreadable manifest (no files)"
    for name in FILES:
        try:
            if not _unchanged(folder / name, files.get(name), verify=verify):
                return f"{name} changed since it was made"
        except OSError as error:
            return f"{name} unreadable ({error.strerror or error})"
    # Hashed again and the same (a copy of the folder, a restore): the next start need not.
    signatures = {name: {**files[name], **_signature(folder / name)} for name in FILES}
    if signatures != {name: files[name] for name in FILES}:
        _write_atomically(folder / MANIFEST, json.dumps({**manifest, "files": {**files, **signatures}}, indent=2))
    return None


def remove_stale(cache_root: Path, digest: str) -> None:
    """Caches of an earlier checkpoint in the same folder (the model was replaced), or of an
    earlier format of the conversion: 1 GB each."""
    current = f"-f{FORMAT}-{digest[:16]}"
    for stale in cache_root.glob("openvino-*"):
        if stale.is_dir() and not stale.name.endswith(current) and ".building-" not in stale.name:
            log.info("removing the compiled model of an earlier checkpoint or HTX version: %s", stale.name)
            shutil.rmtree(stale, ignore_errors=True)
