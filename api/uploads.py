"""Uploads: stream a multipart body to uploads/, check it, and hand it to the daemon's inbox.

The body is parsed as it arrives (python-multipart's push parser), and the `file` part goes
straight to `uploads/<random>.part` with a running SHA-256 and size, so an upload never sits in
memory whole. Its type is decided by its first bytes (`sniff_format`, as the daemon does), not by
its name or content type, and as soon as they arrive: anything but JPEG, PNG and the formats
`pipeline.formats` adds is refused at once and leaves nothing behind. A damaged or empty file
of an accepted format is accepted: the daemon records it as failed with the reason, exactly as
if it had been dropped into the inbox.

Delivery is a rename into the inbox, so the watcher sees one moved-in event, under the name
the client gave (sanitised), never replacing a file already there.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import RowMapping
from starlette.requests import ClientDisconnect, Request

from api.access import bearer_token, check_guess
from api.context import Reader, context
from api.errors import (
    DATABASE_ERRORS,
    DISK_FULL,
    BadRequest,
    ContentTooLarge,
    InsufficientStorage,
    Unauthorized,
    UnsupportedMediaType,
    unsupported_message,
)
from api.guesses import client_address
from models import image_reads
from models.config import Config
from models.formats import EXTENSIONS, SNIFF_BYTES, accepted_formats, sniff_format
from models.ignore import IgnoreRules
from models.image_errors import CorruptImage, UnsupportedFormat
from models.names import display_name

log = logging.getLogger("htx.api.uploads")

FIELD = "file"
# Room for the multipart framing and small form fields around the file: the body may be this
# much larger than api.max_upload_bytes, the file itself may not.
MULTIPART_ALLOWANCE = 64 * 1024
POLL_INTERVAL_S = 0.005
# Leaves room under the usual 255-byte limit for the "-<sha>-<n>" added on a name clash.
MAX_NAME_BYTES = 200
STALE_PART_S = 3600


def check_token(request: Request, config: Config) -> None:
    """With api.upload_token set, uploads and the requests that change images need
    `Authorization: Bearer <token>`; compared in constant time."""
    expected = config.api.upload_token
    if not expected:
        return
    given = bearer_token(request.headers.get("authorization", ""))
    # No token is no guess (the gallery tries without one first); a wrong one counts.
    if given is None or not check_guess(context(request).guesses, client_address(request.scope), [given], (expected,)):
        raise Unauthorized("This server needs its upload token for this: send Authorization: Bearer <token>.")


@dataclass
class StagedFile:
    """An uploaded file, complete, in uploads/ (not yet synced to disk)."""

    path: Path
    handle: BinaryIO
    sha256: str
    size_bytes: int
    client_name: str | None
    format: str | None  # "JPEG", "PNG", "HEIF"... by the bytes; None for a damaged or empty file

    def discard(self) -> None:
        """Remove the staging file, whatever happens: closing flushes what is buffered, which
        fails again on a full disk, and the file must go all the same."""
        try:
            self.handle.close()
        except OSError:
            pass  # its contents are being thrown away
        finally:
            try:
                self.path.unlink(missing_ok=True)
            except OSError as error:  # left for remove_stale_parts at the next start
                log.warning("could not remove the staged upload %s: %s", self.path.name, error.strerror)


class _FileWriter:
    """Writes the `file` part to its staging file, hashing, counting and sniffing as it goes."""

    def __init__(self, path: Path, limit: int, client_name: str | None, accepted: frozenset[str]) -> None:
        self.path = path
        self.limit = limit
        self.client_name = client_name
        self.accepted = accepted
        # "x": never follow or replace anything already under this random name.
        self.handle: BinaryIO = open(path, "xb")  # noqa: SIM115 - closed by StagedFile
        self.digest = hashlib.sha256()
        self.size = 0
        self.head = bytearray()
        self.format: str | None = None
        self.sniffed = False

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise ContentTooLarge(f"The file is larger than the limit of {self.limit:,} bytes.")
        if not self.sniffed:
            self.head += data[: SNIFF_BYTES - len(self.head)]
            if len(self.head) >= SNIFF_BYTES:
                self.sniff()
        self.digest.update(data)
        # Chunks are at most uvicorn's 64 KiB read size: a write to the page cache takes
        # microseconds, cheaper than a hop to a thread. The fsync, which can take long, is not here.
        self.handle.write(data)

    def sniff(self) -> None:
        self.sniffed = True
        try:
            self.format = sniff_format(bytes(self.head), self.accepted)
        except UnsupportedFormat:
            raise BadRequest(unsupported_message(self.accepted)) from None
        except CorruptImage:
            self.format = None  # the daemon will record it as failed, with the reason

    def staged(self) -> StagedFile:
        return StagedFile(self.path, self.handle, self.digest.hexdigest(), self.size, self.client_name, self.format)


def _decode_name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _UploadParser:
    """python-multipart callbacks: the one `file` part is written out, other parts are skipped."""

    def __init__(self, staging_dir: Path, limit: int, accepted: frozenset[str]) -> None:
        self.staging_dir = staging_dir
        self.limit = limit
        self.accepted = accepted
        self.writer: _FileWriter | None = None
        self.complete = False
        self._in_file = False
        self._headers: dict[bytes, bytes] = {}
        self._header_name = b""
        self._header_value = b""

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._in_file = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if options.get(b"name") != FIELD.encode():
            return
        if self.writer is not None:
            raise BadRequest("Send one file per request.")
        raw_name = options.get(b"filename")
        path = self.staging_dir / f"{secrets.token_hex(16)}.part"
        self.writer = _FileWriter(path, self.limit, _decode_name(raw_name) if raw_name else None, self.accepted)
        self._in_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file and self.writer is not None:
            self.writer.write(data[start:end])

    def on_part_end(self) -> None:
        if self._in_file and self.writer is not None:
            if not self.writer.sniffed:
                self.writer.sniff()  # a file shorter than the sniffed head, or empty
            self.complete = True
            self._in_file = False


def _boundary(request: Request) -> bytes:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise UnsupportedMediaType('Send the image as multipart/form-data, in a field named "file".')
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("The multipart/form-data body has no boundary.")
    return boundary


async def receive(request: Request, config: Config) -> StagedFile:
    """Stream the request's `file` part into uploads/; raise an ApiError and leave nothing behind
    for a body that is too large, not multipart, without a file, or not of an accepted format."""
    limit = config.api.max_upload_bytes
    body_limit = limit + MULTIPART_ALLOWANCE
    boundary = _boundary(request)
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > body_limit:
        raise ContentTooLarge(f"The file is larger than the limit of {limit:,} bytes.")
    staging_dir = config.uploads_dir
    upload = _UploadParser(staging_dir, limit, accepted_formats(config.pipeline.formats))
    parser = MultipartParser(boundary, upload.callbacks())
    received = 0
    try:
        with refused_when_disk_full():
            staging_dir.mkdir(parents=True, exist_ok=True)
            async for chunk in request.stream():
                received += len(chunk)
                if received > body_limit:
                    raise ContentTooLarge(f"The file is larger than the limit of {limit:,} bytes.")
                parser.write(chunk)
            parser.finalize()
        if upload.writer is None or not upload.complete:
            raise BadRequest(f'No file in the request: send the image in the multipart field "{FIELD}".')
        return upload.writer.staged()
    except BaseException as error:
        if upload.writer is not None:
            upload.writer.staged().discard()
        if isinstance(error, FormParserError):
            raise BadRequest("The body is not valid multipart/form-data.") from None
        if isinstance(error, ClientDisconnect):
            raise BadRequest("The upload was interrupted.") from None
        raise


# -- into the inbox -----------------------------------------------------------------------------


def inbox_name(client_name: str | None, sha256: str, file_format: str | None, rules: IgnoreRules) -> str:
    """The name the file gets in the inbox, which the daemon shows as the record's filename.

    The client's name without folders or control characters; not hidden or temporary-looking
    (the watcher ignores those, so the upload would never be processed); short enough for
    any filesystem. Without a usable name: upload-<sha256 prefix>.<ext>.
    """
    extension = EXTENSIONS.get(file_format or "", "")
    name = display_name(client_name) if client_name else ""
    name = _fit_bytes(name.lstrip(".~ "), MAX_NAME_BYTES)
    if name and rules.ignored_name(name) and extension:
        name = f"{name}.{extension}"  # "photo.tmp" -> "photo.tmp.jpg", which the watcher takes
    if not name or rules.ignored_name(name):
        name = f"upload-{sha256[:12]}" + (f".{extension}" if extension else "")
    return name


def _fit_bytes(name: str, limit: int) -> str:
    """Shorten the stem so the UTF-8 name fits in `limit` bytes, keeping the extension."""
    if len(name.encode()) <= limit:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or len(suffix.encode()) > 16:
        stem, suffix = name, ""
    room = limit - len(suffix.encode()) - (1 if suffix else 0)
    stem = stem.encode()[:room].decode("utf-8", errors="ignore")
    return f"{stem}.{suffix}" if suffix else stem


def _candidates(name: str, sha256: str) -> list[str]:
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        stem, suffix = name, ""
    tail = f".{suffix}" if suffix else ""
    tagged = f"{stem}-{sha256[:8]}"
    return [name, f"{tagged}{tail}", *(f"{tagged}-{number}{tail}" for number in range(2, 100))]


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
if _renameat2 is not None:
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    _renameat2.restype = ctypes.c_int


def rename_noreplace(source: Path, destination: Path) -> None:
    """Rename, failing with FileExistsError rather than replace `destination`.

    A rename is what the watcher sees as one complete moved-in file (a hard link would look
    like a new file still being written). Linux's renameat2(RENAME_NOREPLACE) makes the
    check and the rename one step; where the filesystem lacks it, the check comes just before.
    """
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(destination), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code), str(source), None, str(destination))
    if os.path.lexists(destination):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(destination))
    os.rename(source, destination)


@contextmanager
def refused_when_disk_full() -> Iterator[None]:
    """A full disk (or quota) under uploads/ or the inbox becomes 507, said in words: the
    error itself names server paths."""
    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        log.warning("upload refused: the data disk is full (%s)", error.strerror)
        raise InsufficientStorage(DISK_FULL) from None


def deliver(staged: StagedFile, config: Config) -> str:
    """Sync the staged file and rename it into the inbox; return its name there.

    Blocking (fsync): run it on a thread.
    """
    with refused_when_disk_full():
        staged.handle.flush()
        os.fsync(staged.handle.fileno())
        staged.handle.close()
        inbox = config.inbox_dir
        inbox.mkdir(parents=True, exist_ok=True)
        name = inbox_name(staged.client_name, staged.sha256, staged.format, IgnoreRules(config.watch.ignore))
        source = staged.path if os.stat(staged.path).st_dev == os.stat(inbox).st_dev else _copy_into(staged.path, inbox)
        try:
            try:
                return _rename_in(source, inbox, name, staged.sha256)
            except OSError as error:
                # Another mount of the same filesystem (a bind mount, systemd's ReadWritePaths=):
                # the same st_dev, and still no rename across it.
                if error.errno != errno.EXDEV or source != staged.path:
                    raise
                source = _copy_into(staged.path, inbox)
                return _rename_in(source, inbox, name, staged.sha256)
        finally:
            source.unlink(missing_ok=True)
            staged.path.unlink(missing_ok=True)


def _rename_in(source: Path, inbox: Path, name: str, sha256: str) -> str:
    for candidate in _candidates(name, sha256):
        try:
            rename_noreplace(source, inbox / candidate)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free name in the inbox", name)


def _copy_into(source: Path, inbox: Path) -> Path:
    """A synced copy of `source` inside the inbox, for an inbox a rename cannot reach (another
    filesystem, a network share, another mount). Its hidden `.part` name is one the watcher
    ignores, until the rename gives it its name."""
    copy = inbox / f".htx-upload-{secrets.token_hex(8)}.part"
    try:
        with open(source, "rb") as reader, open(copy, "xb") as writer:
            shutil.copyfileobj(reader, writer, 1024 * 1024)
            writer.flush()
            os.fsync(writer.fileno())
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    return copy


async def find_known(reader: Reader, sha256: str) -> RowMapping | None:
    """The record with these bytes, or None (also when there is no database yet)."""
    try:
        return await reader.run(image_reads.image_by_sha256, sha256)
    except DATABASE_ERRORS:  # none yet, or damaged: the upload still waits in the inbox
        return None


async def wait_registered(reader: Reader, sha256: str, timeout_s: float) -> RowMapping | None:
    """Poll for the daemon's row for these bytes, for at most `timeout_s`."""
    deadline = anyio.current_time() + timeout_s
    while True:
        row = await find_known(reader, sha256)
        if row is not None or anyio.current_time() >= deadline:
            return row
        await anyio.sleep(POLL_INTERVAL_S)


def remove_stale_parts(uploads_dir: Path, older_than_s: float = STALE_PART_S) -> int:
    """Delete staging files an interrupted server left behind; returns how many."""
    removed = 0
    if not uploads_dir.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    for path in uploads_dir.glob("*.part"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed
