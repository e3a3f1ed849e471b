"""Shards named by URL (``http(s)://`` in ``data.splits`` or ``data.root``): each is downloaded
once into ``data.shard_cache`` and then read from there, as a local shard.

Why a local copy: vlr reads shards map-style (one seek per item, in the sampler's order), which
a local file serves and an HTTP stream does not; whole shards downloaded once keep sampling,
per-item seeding and exact resume what they are for local shards. A shard appears in the cache
whole or not at all (`vlr.io.atomic_write`: a temporary name, then a rename), under a file lock
so the processes of one machine (DDP ranks) download it once; a download that stops short is
discarded and named.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO

from filelock import FileLock

from vlr.errors import UserError
from vlr.io import atomic_write

log = logging.getLogger(__name__)

URL_SCHEMES = ("http://", "https://")
CHUNK = 1 << 20


class ShardDownloadError(UserError):
    """A shard URL could not be downloaded (unreachable, an HTTP error, a download cut short)."""


def is_url(name: str) -> bool:
    return name.lower().startswith(URL_SCHEMES)


def cached_path(url: str, cache_dir: str | Path) -> Path:
    """Where ``url`` is kept: its file name behind a digest of the whole URL (two servers' ``00000.tar`` differ)."""
    name = os.path.basename(urllib.parse.urlparse(url).path) or "shard.tar"
    return Path(cache_dir) / f"{hashlib.sha1(url.encode()).hexdigest()[:16]}-{name}"


def _reason(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


def _copy(response, fh: IO[bytes], url: str, option: str) -> None:
    """The response body into ``fh``; a read that fails, or a body shorter than its
    Content-Length, is a `ShardDownloadError` (not a write error of the cache file)."""
    expected = response.headers.get("Content-Length")
    received = 0
    while True:
        try:
            chunk = response.read(CHUNK)
        except (OSError, ValueError) as err:
            raise ShardDownloadError(f"data.{option}: download of {url} failed: {_reason(err)}") from None
        if not chunk:
            break
        fh.write(chunk)
        received += len(chunk)
    if expected is not None and received != int(expected):
        raise ShardDownloadError(
            f"data.{option}: download of {url} stopped short ({received} of {expected} bytes); nothing was kept"
        )


def download_shard(url: str, cache_dir: str | Path | None, option: str) -> Path:
    """The local copy of the shard at ``url`` in ``cache_dir``, downloaded now if it is not there."""
    if cache_dir is None:
        raise ShardDownloadError(f"data.{option} names a URL ({url}): set data.shard_cache to a folder to download to")
    target = cached_path(url, cache_dir)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_file():  # another process downloaded it while this one waited
            return target
        try:
            response = urllib.request.urlopen(url, timeout=60)
        except (OSError, ValueError) as err:  # URLError and HTTPError are OSErrors
            raise ShardDownloadError(f"data.{option}: cannot download {url}: {_reason(err)}") from None
        with response:
            atomic_write(target, lambda fh: _copy(response, fh, url, option), "downloaded shard")
    log.info("downloaded shard %s to %s", url, target)
    return target
