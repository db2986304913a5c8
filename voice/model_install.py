"""Install a Vosk model archive (local file or http(s) URL): verify its SHA-256, unpack safely, swap it into place."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024
_GIB = 1024 * _MIB
DEFAULT_MAX_DOWNLOAD_BYTES = 4 * _GIB
DEFAULT_MAX_UNPACKED_BYTES = 8 * _GIB
DEFAULT_MAX_MEMBERS = 100_000
_COPY_CHUNK = _MIB
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip")


class ModelInstallError(Exception):
    """The model could not be installed; nothing was changed under the destination."""


def looks_like_vosk_model(path: Path) -> bool:
    """True when `path` holds the two files every Vosk (Kaldi nnet3) model has: am/final.mdl and conf/model.conf."""
    return (path / "am" / "final.mdl").is_file() and (path / "conf" / "model.conf").is_file()


def install_model(
    source: str,
    dest_root: Path,
    *,
    sha256: str,
    name: str | None = None,
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    timeout: float = 60.0,
) -> Path:
    """Install the Vosk model in the archive at `source` as `dest_root/<name>` and return that path.

    `source` is a local path, a file:// URL or an http(s) URL. The archive (zip, or tar optionally gzip, bzip2 or
    xz compressed; recognised by content, not name) must match `sha256` before anything is unpacked. It must
    contain exactly one model directory; `name` defaults to that directory's name (or to the archive's file name
    when the model files sit at the archive's root). The new model is unpacked into a hidden staging directory
    inside `dest_root` and renamed into place; an existing install of the same name is moved aside only once
    the new one is complete, and removed afterwards. On any error the staging area and download are removed.
    `timeout` is the socket timeout of each network operation (connect, each read), not of the whole download.
    """
    expected = sha256.strip().lower()
    if not _SHA256.fullmatch(expected):
        raise ModelInstallError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
    if name is not None:
        _check_install_name(name)
    dest_root = Path(dest_root)
    dest_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".install-", dir=dest_root))
    try:
        archive = _fetch(source, staging / "archive", max_download_bytes, timeout)
        actual = _sha256_of(archive)
        if actual != expected:
            raise ModelInstallError(f"SHA-256 mismatch for {source}: expected {expected}, got {actual}")
        unpacked = staging / "unpacked"
        unpacked.mkdir()
        _unpack(archive, unpacked, max_unpacked_bytes=max_unpacked_bytes, max_members=max_members)
        model_dir = _find_model_dir(unpacked)
        install_name = name or (model_dir.name if model_dir != unpacked else _name_from_source(source))
        _check_install_name(install_name)
        target = dest_root / install_name
        _swap_into_place(model_dir, target, staging)
        logger.info("installed Vosk model %s from %s", target, source)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- Fetching ----------------------------------------------------------------------------------------------------


def _fetch(source: str, download_to: Path, max_bytes: int, timeout: float) -> Path:
    """The archive as a local file: local sources are used in place, URLs are streamed to `download_to`."""
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        _download(source, download_to, max_bytes, timeout)
        return download_to
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path))
    elif scheme == "" or len(scheme) == 1:  # a plain path (a one-letter "scheme" is a Windows drive)
        path = Path(source)
    else:
        raise ModelInstallError(f"unsupported model source {source!r}: use a path or an http(s) URL")
    if not path.is_file():
        raise ModelInstallError(f"model archive not found: {path}")
    if path.stat().st_size > max_bytes:
        raise ModelInstallError(f"model archive {path} is larger than the {max_bytes}-byte limit")
    return path


def _download(url: str, destination: Path, max_bytes: int, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "bankbot-model-install"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, destination.open("wb") as output:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
                raise ModelInstallError(f"{url} is {declared} bytes, over the {max_bytes}-byte limit")
            received = 0
            while block := response.read(_COPY_CHUNK):
                received += len(block)
                # Checked while streaming too: Content-Length may be absent or wrong.
                if received > max_bytes:
                    raise ModelInstallError(f"{url} is over the {max_bytes}-byte limit")
                output.write(block)
    except urllib.error.HTTPError as error:
        raise ModelInstallError(f"downloading {url} failed: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        raise ModelInstallError(f"downloading {url} failed: {error}") from error


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_COPY_CHUNK):
            digest.update(block)
    return digest.hexdigest()


# --- Unpacking ---------------------------------------------------------------------------------------------------


def _unpack(archive: Path, destination: Path, *, max_unpacked_bytes: int, max_members: int) -> None:
    try:
        if zipfile.is_zipfile(archive):
            _unpack_zip(archive, destination, max_unpacked_bytes, max_members)
        elif tarfile.is_tarfile(archive):
            _unpack_tar(archive, destination, max_unpacked_bytes, max_members)
        else:
            raise ModelInstallError("the model archive is neither a zip nor a tar file")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise ModelInstallError(f"the model archive is corrupt: {error}") from error
    except OSError as error:
        raise ModelInstallError(f"unpacking the model archive failed: {error}") from error


def _safe_relative(member_name: str) -> PurePosixPath | None:
    """The member's path relative to the archive root, or None for the root itself; raises for escaping names.

    Absolute names, `..` components, drive letters and backslashes are refused outright rather than
    normalised: an archive that carries them was not made by a model publisher's ordinary tooling.
    """
    if "\\" in member_name or "\x00" in member_name:
        raise ModelInstallError(f"unsafe archive member name {member_name!r}")
    path = PurePosixPath(member_name)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", member_name):
        raise ModelInstallError(f"archive member has an absolute path: {member_name!r}")
    parts = [part for part in path.parts if part != "."]
    if ".." in parts:
        raise ModelInstallError(f"archive member escapes the archive root: {member_name!r}")
    return PurePosixPath(*parts) if parts else None


class _Budget:
    """Counts members and bytes actually written, so a lying header cannot unpack past the limit."""

    def __init__(self, max_bytes: int, max_members: int) -> None:
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.bytes = 0
        self.members = 0

    def add_member(self) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise ModelInstallError(f"the archive has more than {self.max_members} members")

    def add_bytes(self, count: int) -> None:
        self.bytes += count
        if self.bytes > self.max_bytes:
            raise ModelInstallError(f"the archive unpacks to more than {self.max_bytes} bytes")


def _write_file(source: IO[bytes], target: Path, budget: _Budget) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # A file and a directory (or two files) with one name: refuse rather than guess which the publisher meant.
    if target.is_dir():
        raise ModelInstallError(f"archive member {target.name!r} is both a file and a directory")
    with target.open("wb") as output:
        while block := source.read(_COPY_CHUNK):
            budget.add_bytes(len(block))
            output.write(block)


def _unpack_zip(archive: Path, destination: Path, max_bytes: int, max_members: int) -> None:
    budget = _Budget(max_bytes, max_members)
    with zipfile.ZipFile(archive) as bundle:
        members = bundle.infolist()
        if sum(member.file_size for member in members) > max_bytes:
            raise ModelInstallError(f"the archive declares more than {max_bytes} unpacked bytes")
        for member in members:
            budget.add_member()
            relative = _safe_relative(member.filename)
            # Unix file-type bits live in the high half of external_attr; many writers leave them zero.
            file_type = stat.S_IFMT(member.external_attr >> 16)
            if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise ModelInstallError(f"archive member {member.filename!r} is a link or special file; refused")
            if relative is None:
                continue
            target = destination.joinpath(*relative.parts)
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            with bundle.open(member) as source:
                _write_file(source, target, budget)


def _unpack_tar(archive: Path, destination: Path, max_bytes: int, max_members: int) -> None:
    budget = _Budget(max_bytes, max_members)
    with tarfile.open(archive, mode="r:*") as bundle:
        # Members are streamed one at a time (never getmembers()) so a huge member list is caught early.
        for member in _iterate_tar(bundle):
            budget.add_member()
            relative = _safe_relative(member.name)
            if member.issym() or member.islnk():
                # A Vosk model has no links; refusing every link closes all link-based escapes at once.
                target_note = f" -> {member.linkname!r}"
                outside = PurePosixPath(member.linkname).is_absolute() or ".." in PurePosixPath(member.linkname).parts
                where = "outside the archive" if outside else "inside the archive"
                raise ModelInstallError(f"archive member {member.name!r}{target_note} is a link ({where}); refused")
            if not (member.isfile() or member.isdir()):
                raise ModelInstallError(f"archive member {member.name!r} is a device or special file; refused")
            if relative is None:
                continue
            target = destination.joinpath(*relative.parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if member.size > max_bytes - budget.bytes:
                raise ModelInstallError(f"the archive unpacks to more than {max_bytes} bytes")
            source = bundle.extractfile(member)
            if source is None:
                raise ModelInstallError(f"cannot read archive member {member.name!r}")
            with source:
                _write_file(source, target, budget)


def _iterate_tar(bundle: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (member := bundle.next()) is not None:
        yield member


# --- Placing -----------------------------------------------------------------------------------------------------


def _find_model_dir(root: Path) -> Path:
    found = [root] if looks_like_vosk_model(root) else []
    for directory, subdirectories, _files in os.walk(root):
        subdirectories.sort()
        for subdirectory in subdirectories:
            candidate = Path(directory) / subdirectory
            if looks_like_vosk_model(candidate):
                found.append(candidate)
    if not found:
        raise ModelInstallError("the archive holds no Vosk model (no directory with am/final.mdl and conf/model.conf)")
    # A model directory nested inside another model's (e.g. an extra copy) is ambiguous: refuse rather than pick.
    if len(found) > 1:
        listing = ", ".join(str(path.relative_to(root)) for path in found)
        raise ModelInstallError(f"the archive holds several model directories: {listing}")
    return found[0]


def _name_from_source(source: str) -> str:
    base = PurePosixPath(urllib.parse.urlsplit(source).path).name or Path(source).name
    for suffix in _ARCHIVE_SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def _check_install_name(name: str) -> None:
    if not name or name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name or "\x00" in name:
        raise ModelInstallError(f"unusable model name {name!r}")


def _swap_into_place(model_dir: Path, target: Path, staging: Path) -> None:
    """Rename the complete new model to `target`, moving an existing install aside first and deleting it after.

    Both renames stay inside `dest_root` (one filesystem), so each is atomic; between them `target` is briefly
    absent, which is the price of not depending on Linux's renameat2(RENAME_EXCHANGE).
    """
    previous = staging / "previous"
    had_previous = target.exists() or target.is_symlink()
    if had_previous:
        os.rename(target, previous)
    try:
        os.rename(model_dir, target)
    except OSError as error:
        if had_previous:
            with contextlib.suppress(OSError):
                os.rename(previous, target)
        raise ModelInstallError(f"cannot move the model into {target}: {error}") from error
    # `previous` sits inside the staging directory, which the caller removes.
