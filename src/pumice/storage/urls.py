"""User paths -> TensorStore kvstore specs.

Accepted: plain local paths, ``file://``, ``memory://``, ``gs://``, ``s3://`` and read-only
``http(s)://``; a leading ``precomputed://`` is dropped. S3-compatible stores take their endpoint
from ``PUMICE_S3_ENDPOINT`` or the standard ``AWS_ENDPOINT_URL`` (``--s3-endpoint`` sets the former).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import PumiceError

SCHEMES = ("file", "memory", "gs", "s3", "http", "https")


def normalize(url: str) -> str:
    """One canonical spelling per location, valid in any process and working directory.

    Local paths become absolute ``file://`` URLs; remote URLs lose trailing slashes.
    """
    url = str(url).strip()
    if url.startswith("precomputed://"):
        url = url[len("precomputed://") :]
    if "://" not in url:
        return "file://" + str(Path(url).expanduser().absolute())
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise PumiceError(
            f"unsupported URL scheme {scheme}:// in {url!r}; use a local path, file://, memory://, gs://, s3:// or http(s)://"
        )
    if scheme == "file":
        return "file://" + str(Path(rest).expanduser().absolute())
    rest = rest.rstrip("/")
    if not rest:
        raise PumiceError(f"{url!r} names no location; add a bucket or path after {scheme}://")
    return f"{scheme}://{rest}"


def scheme_of(url: str) -> str:
    return normalize(url).split("://", 1)[0]


def local_path(url: str) -> Path | None:
    """The filesystem path of a local URL, or None for anything remote."""
    url = normalize(url)
    return Path(url[len("file://") :]) if url.startswith("file://") else None


def is_writable(url: str) -> bool:
    return scheme_of(url) not in ("http", "https")


def s3_endpoint() -> str | None:
    return os.environ.get("PUMICE_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def kvstore_spec(url: str) -> dict:
    """The TensorStore kvstore spec of a layer URL (its path ends with '/')."""
    url = normalize(url)
    scheme, rest = url.split("://", 1)
    if scheme == "file":
        return {"driver": "file", "path": rest.rstrip("/") + "/"}
    if scheme == "memory":
        return {"driver": "memory", "path": rest + "/"}
    if scheme in ("http", "https"):
        return {"driver": "http", "base_url": url + "/"}
    bucket, _, path = rest.partition("/")
    path = path + "/" if path else ""
    if scheme == "gs":
        return {"driver": "gcs", "bucket": bucket, "path": path}
    spec = {"driver": "s3", "bucket": bucket, "path": path}
    endpoint = s3_endpoint()
    if endpoint:
        spec["endpoint"] = endpoint
        spec["aws_region"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    elif os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
        spec["aws_region"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return spec


def join(url: str, *parts: str) -> str:
    return "/".join([normalize(url), *[p.strip("/") for p in parts if p]])


def display(url: str) -> str:
    """How to show a URL to a person: local paths as paths."""
    path = local_path(url)
    return str(path) if path is not None else normalize(url)
