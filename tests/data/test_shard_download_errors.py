"""A shard named by URL that cannot be downloaded is one line naming the URL and the reason, and
nothing half-downloaded is kept (vlr/data/shards/download.py; the served cases are in
tests/data/test_shards.py)."""

import urllib.error

import pytest

from vlr.data.shards import download
from vlr.data.shards.download import ShardDownloadError, cached_path, download_shard

URL = "http://example.invalid/shards/00000.tar"


class _Response:
    def __init__(self, body: bytes, length: int | None = None, fail_after: int | None = None):
        self.body, self.sent, self.fail_after = body, 0, fail_after
        self.headers = {} if length is None else {"Content-Length": str(length)}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, n):
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise ConnectionResetError(104, "Connection reset by peer")
        chunk = self.body[self.sent : self.sent + n]
        self.sent += len(chunk)
        return chunk


def test_a_url_without_a_cache_folder_says_which_option_to_set():
    with pytest.raises(ShardDownloadError, match=r"^data.root names a URL \(http://.*\): set data.shard_cache"):
        download_shard(URL, None, "root")


@pytest.mark.parametrize(
    "error, reason",
    [
        (urllib.error.URLError("Name or service not known"), "Name or service not known"),
        (TimeoutError(), "TimeoutError"),
    ],
)
def test_an_unreachable_server_is_named_with_its_reason(tmp_path, monkeypatch, error, reason):
    def refuse(url, timeout):
        raise error

    monkeypatch.setattr(download.urllib.request, "urlopen", refuse)
    with pytest.raises(ShardDownloadError, match=rf"^data.root: cannot download {URL}: {reason}$"):
        download_shard(URL, tmp_path, "root")
    assert not cached_path(URL, tmp_path).exists()


@pytest.mark.parametrize(
    "response, message",
    [
        (_Response(b"x" * 10, length=25), "stopped short (10 of 25 bytes); nothing was kept"),
        (_Response(b"x" * 10, fail_after=4), "failed: [Errno 104] Connection reset by peer"),
    ],
)
def test_a_body_cut_short_keeps_nothing(tmp_path, monkeypatch, response, message):
    monkeypatch.setattr(download, "CHUNK", 4)
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: response)
    with pytest.raises(ShardDownloadError) as raised:
        download_shard(URL, tmp_path, "root")
    assert str(raised.value) == f"data.root: download of {URL} {message}"
    assert not cached_path(URL, tmp_path).exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_a_shard_another_process_downloaded_while_we_waited_is_not_fetched_again(tmp_path, monkeypatch):
    target = cached_path(URL, tmp_path)

    class Lock:  # the other process finishes its download while this one waits for the lock
        def __init__(self, path):
            pass

        def __enter__(self):
            target.write_bytes(b"tar")

        def __exit__(self, *exc):
            return False

    def never(url, timeout):
        raise AssertionError("downloaded twice")

    monkeypatch.setattr(download, "FileLock", Lock)
    monkeypatch.setattr(download.urllib.request, "urlopen", never)
    assert download_shard(URL, tmp_path, "root") == target and target.read_bytes() == b"tar"
