"""Vosk model installation: by path and over HTTP on loopback, checksum first, safe unpacking, atomic replacement."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from voice.model_install import ModelInstallError, install_model, looks_like_vosk_model

# The files a model needs to be recognised, plus a few of the others a real small model carries.
MODEL_FILES = {
    "am/final.mdl": b"fake acoustic model",
    "conf/model.conf": b"--sample-frequency=16000\n",
    "conf/mfcc.conf": b"--use-energy=false\n",
    "graph/HCLr.fst": b"fake graph",
    "README": b"test model",
}

Entries = dict[str, bytes]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_zip(path: Path, entries: Entries) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
    return path


def make_tar(path: Path, entries: Entries, extra: Callable[[tarfile.TarFile], None] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as bundle:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(bundle)
    return path


def model_entries(top: str = "vosk-model-test-0.1", files: Entries = MODEL_FILES) -> Entries:
    prefix = f"{top}/" if top else ""
    return {prefix + name: data for name, data in files.items()}


def visible(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir()) if root.exists() else []


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1 for the test's duration: (directory, base URL)."""
    served = tmp_path / "served"
    served.mkdir()

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- Happy paths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("maker", [make_zip, make_tar], ids=["zip", "tar.gz"])
def test_install_by_url_from_a_loopback_server(
    tmp_path: Path, http_root: tuple[Path, str], maker: Callable[[Path, Entries], Path]
) -> None:
    served, base_url = http_root
    archive = maker(served / "model.archive", model_entries())
    installed = install_model(f"{base_url}/model.archive", tmp_path / "models", sha256=sha256_of(archive))
    assert installed == tmp_path / "models" / "vosk-model-test-0.1"
    assert looks_like_vosk_model(installed)
    assert (installed / "graph" / "HCLr.fst").read_bytes() == b"fake graph"
    # No staging directory or download is left beside the model.
    assert visible(tmp_path / "models") == ["vosk-model-test-0.1"]


@pytest.mark.parametrize("maker", [make_zip, make_tar], ids=["zip", "tar.gz"])
def test_install_by_path_with_an_explicit_name(tmp_path: Path, maker: Callable[[Path, Entries], Path]) -> None:
    archive = maker(tmp_path / "model.bin", model_entries())
    installed = install_model(str(archive), tmp_path / "models", sha256=sha256_of(archive).upper(), name="zh-small")
    assert installed == tmp_path / "models" / "zh-small"
    assert looks_like_vosk_model(installed)


def test_archive_without_a_top_level_folder_is_named_after_the_archive(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "vosk-model-flat.tar.gz", model_entries(top=""))
    installed = install_model(f"file://{archive}", tmp_path / "models", sha256=sha256_of(archive))
    assert installed.name == "vosk-model-flat"
    assert looks_like_vosk_model(installed)


def test_reinstall_replaces_the_previous_model(tmp_path: Path) -> None:
    first = make_zip(tmp_path / "v1.zip", model_entries(files={**MODEL_FILES, "old-only.txt": b"v1"}))
    second = make_zip(tmp_path / "v2.zip", model_entries(files={**MODEL_FILES, "README": b"version 2"}))
    models = tmp_path / "models"
    install_model(str(first), models, sha256=sha256_of(first))
    installed = install_model(str(second), models, sha256=sha256_of(second))
    assert (installed / "README").read_bytes() == b"version 2"
    assert not (installed / "old-only.txt").exists()
    assert visible(models) == ["vosk-model-test-0.1"]


def test_failed_reinstall_keeps_the_previous_model(tmp_path: Path) -> None:
    good = make_zip(tmp_path / "good.zip", model_entries())
    models = tmp_path / "models"
    installed = install_model(str(good), models, sha256=sha256_of(good))
    broken = make_zip(tmp_path / "broken.zip", {"vosk-model-test-0.1/README": b"no model files"})
    with pytest.raises(ModelInstallError):
        install_model(str(broken), models, sha256=sha256_of(broken))
    assert looks_like_vosk_model(installed)
    assert visible(models) == ["vosk-model-test-0.1"]


# --- Refusals ---------------------------------------------------------------------------------------------------


def test_wrong_checksum_is_rejected_and_nothing_is_installed(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    served, base_url = http_root
    archive = make_zip(served / "model.zip", model_entries())
    wrong = "0" * 64
    models = tmp_path / "models"
    with pytest.raises(ModelInstallError) as caught:
        install_model(f"{base_url}/model.zip", models, sha256=wrong)
    assert wrong in str(caught.value)
    assert sha256_of(archive) in str(caught.value)
    assert visible(models) == []


def test_malformed_checksum_is_rejected_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ModelInstallError, match="64 hexadecimal"):
        install_model("/nonexistent.zip", tmp_path / "models", sha256="abc")


@pytest.mark.parametrize(
    "member", ["../escaped.txt", "vosk-model-test-0.1/../../escaped.txt", "/tmp/absolute.txt", "a\\..\\b.txt"]
)
def test_traversal_names_are_rejected(tmp_path: Path, member: str) -> None:
    archive = make_zip(tmp_path / "evil.zip", {**model_entries(), member: b"payload"})
    models = tmp_path / "models"
    with pytest.raises(ModelInstallError, match=r"absolute|escapes|unsafe"):
        install_model(str(archive), models, sha256=sha256_of(archive))
    assert visible(models) == []
    assert not (tmp_path / "escaped.txt").exists()


def test_tar_traversal_is_rejected(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "evil.tar.gz", {**model_entries(), "../escaped.txt": b"payload"})
    with pytest.raises(ModelInstallError, match="escapes"):
        install_model(str(archive), tmp_path / "models", sha256=sha256_of(archive))
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize(
    ("kind", "link_target"),
    [(tarfile.SYMTYPE, "/etc/passwd"), (tarfile.SYMTYPE, "../../outside"), (tarfile.LNKTYPE, "/etc/passwd")],
)
def test_links_pointing_outside_are_rejected(tmp_path: Path, kind: bytes, link_target: str) -> None:
    def add_link(bundle: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("vosk-model-test-0.1/graph/link")
        info.type = kind
        info.linkname = link_target
        bundle.addfile(info)

    archive = make_tar(tmp_path / "links.tar.gz", model_entries(), extra=add_link)
    models = tmp_path / "models"
    with pytest.raises(ModelInstallError, match="outside the archive"):
        install_model(str(archive), models, sha256=sha256_of(archive))
    assert visible(models) == []


def test_zip_symlink_is_rejected(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for name, data in model_entries().items():
            bundle.writestr(name, data)
        link = zipfile.ZipInfo("vosk-model-test-0.1/escape")
        link.external_attr = (0o120777 << 16) | 0x20  # S_IFLNK: how Info-ZIP stores a symlink
        bundle.writestr(link, "/etc")
    with pytest.raises(ModelInstallError, match="link or special file"):
        install_model(str(archive), tmp_path / "models", sha256=sha256_of(archive))


def test_device_files_are_rejected(tmp_path: Path) -> None:
    def add_device(bundle: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("vosk-model-test-0.1/null")
        info.type = tarfile.CHRTYPE
        info.devmajor, info.devminor = 1, 3
        bundle.addfile(info)

    archive = make_tar(tmp_path / "device.tar.gz", model_entries(), extra=add_device)
    with pytest.raises(ModelInstallError, match="device or special"):
        install_model(str(archive), tmp_path / "models", sha256=sha256_of(archive))


@pytest.mark.parametrize("maker", [make_zip, make_tar], ids=["zip", "tar.gz"])
def test_unpacked_size_limit_stops_archive_bombs(tmp_path: Path, maker: Callable[[Path, Entries], Path]) -> None:
    archive = maker(tmp_path / "bomb.bin", {**model_entries(), "vosk-model-test-0.1/zeros": bytes(4 * 1024 * 1024)})
    assert archive.stat().st_size < 100_000  # it compresses to almost nothing
    models = tmp_path / "models"
    with pytest.raises(ModelInstallError, match="more than 1048576"):
        install_model(str(archive), models, sha256=sha256_of(archive), max_unpacked_bytes=1024 * 1024)
    assert visible(models) == []


def test_download_size_limit(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    served, base_url = http_root
    archive = make_zip(served / "model.zip", model_entries())
    with pytest.raises(ModelInstallError, match="byte limit"):
        install_model(f"{base_url}/model.zip", tmp_path / "models", sha256=sha256_of(archive), max_download_bytes=100)
    assert visible(tmp_path / "models") == []


def test_archive_without_a_model_is_rejected(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "empty.zip", {"something/README": b"not a model", "something/am/other": b"x"})
    with pytest.raises(ModelInstallError, match="no Vosk model"):
        install_model(str(archive), tmp_path / "models", sha256=sha256_of(archive))
    assert visible(tmp_path / "models") == []


def test_archive_with_two_models_is_rejected(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "two.zip", {**model_entries("model-a"), **model_entries("model-b")})
    with pytest.raises(ModelInstallError, match="several model directories"):
        install_model(str(archive), tmp_path / "models", sha256=sha256_of(archive))


def test_http_errors_are_reported(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    _served, base_url = http_root
    with pytest.raises(ModelInstallError, match="HTTP 404"):
        install_model(f"{base_url}/missing.zip", tmp_path / "models", sha256="0" * 64)
    assert visible(tmp_path / "models") == []


def test_non_archive_is_rejected(tmp_path: Path) -> None:
    not_archive = tmp_path / "model.zip"
    not_archive.write_bytes(b"<html>login page</html>")
    with pytest.raises(ModelInstallError, match="neither a zip nor a tar"):
        install_model(str(not_archive), tmp_path / "models", sha256=sha256_of(not_archive))


@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", ""])
def test_unsafe_install_names_are_rejected(tmp_path: Path, name: str) -> None:
    archive = make_zip(tmp_path / "model.zip", model_entries())
    with pytest.raises(ModelInstallError, match="unusable model name"):
        install_model(str(archive), tmp_path / "models", sha256=sha256_of(archive), name=name)


def test_looks_like_vosk_model_needs_both_files(tmp_path: Path) -> None:
    (tmp_path / "am").mkdir()
    (tmp_path / "am" / "final.mdl").write_bytes(b"x")
    assert not looks_like_vosk_model(tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "model.conf").write_bytes(b"x")
    assert looks_like_vosk_model(tmp_path)
