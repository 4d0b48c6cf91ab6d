"""gm.download: the one downloader (atomic, sha256-checked, content-checked) with a fake urlopen."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request

import pytest

from gm.download import DownloadError, download, format_size


class _Response(io.BytesIO):
    def __init__(self, payload: bytes) -> None:
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def _serve(monkeypatch, payload: bytes | Exception) -> None:
    def urlopen(url, timeout=None):
        if isinstance(payload, Exception):
            raise payload
        return _Response(payload)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def test_download_writes_the_content_and_checks_its_sha256(tmp_path, monkeypatch, capsys):
    payload = b"x" * 3_000_000
    _serve(monkeypatch, payload)
    path = download(
        "https://h/f.bin", tmp_path / "a" / "f.bin", sha256=hashlib.sha256(payload).hexdigest(), progress=True
    )
    assert path.read_bytes() == payload and sorted(p.name for p in path.parent.iterdir()) == ["f.bin"]
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "downloading f.bin (3.0 MB)" and err[-1].startswith("downloaded f.bin (3.0 MB, sha256 checked) ->")
    with pytest.raises(DownloadError, match="sha256 mismatch") as info:
        download("https://h/g.bin", tmp_path / "g.bin", sha256="0" * 64)
    assert info.value.kind == "sha256" and not (tmp_path / "g.bin").exists()


def test_a_failed_check_or_network_leaves_nothing(tmp_path, monkeypatch):
    _serve(monkeypatch, b"<html>not found</html>")

    def check(tmp):
        if tmp.read_bytes().startswith(b"<html>"):
            raise ValueError("is an HTML page, not data")

    with pytest.raises(DownloadError, match=r"^https://h/d.csv is an HTML page") as info:
        download("https://h/d.csv", tmp_path / "d.csv", check=check)
    assert info.value.kind == "content" and list(tmp_path.iterdir()) == []
    _serve(monkeypatch, urllib.error.URLError("no route to host"))
    with pytest.raises(DownloadError, match="could not download https://h/d.csv: no route to host") as info:
        download("https://h/d.csv", tmp_path / "d.csv")
    assert info.value.kind == "network" and list(tmp_path.iterdir()) == []


def test_format_size_uses_decimal_units():
    assert [format_size(n) for n in (999, 1000, 2_500_096, 3 * 10**9)] == ["999 B", "1.0 kB", "2.5 MB", "3.0 GB"]


def test_a_write_failure_is_not_reported_as_a_network_failure(tmp_path, monkeypatch):
    _serve(monkeypatch, b"data")

    class Full(io.BytesIO):
        def write(self, data):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr("builtins.open", lambda *args, **kwargs: Full())
    with pytest.raises(DownloadError, match="cannot write .*No space left") as info:
        download("https://h/f.bin", tmp_path / "f.bin")
    assert info.value.kind == "write"
