"""Split files behind a URI (`s3://bucket/prefix`, `gs://`, `hdfs://`, `file://`): listed and fetched through
pyarrow's filesystems, as `analysis` reads results, then read by the same readers and checks as local files.

pyarrow resolves credentials and endpoints the standard way (environment, profile, instance role;
`AWS_ENDPOINT_URL` for MinIO or a local S3 endpoint; `?endpoint_override=...` in the URI). Each needed object is
copied once per node into the cache, under a key of its URI, size and modification time, so a changed object is
fetched (and tokenized) again and never served stale; a copy whose size differs from the listing is refused.
A base model at a URI (`model: s3://...`) is fetched by these same functions: see `remote/model.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from record.errors import InputError

FIELD = "data.dataset"


def cache_root() -> Path:
    """Where this node caches fetched split files and tokenized splits (`LORA_SWEEP_CACHE`, default
    ~/.cache/lora-sweep)."""
    return Path(os.environ.get("LORA_SWEEP_CACHE", Path.home() / ".cache" / "lora-sweep"))


def is_uri(location: str | None) -> bool:
    """Whether a dataset location (or GLUE_DIR) is a URI for pyarrow's filesystems rather than a local path."""
    return bool(location) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", location) is not None


@dataclass(frozen=True)
class RemoteFolder:
    """A listed folder: its URI, the filesystem and path pyarrow gave for it, and its files (name -> size, mtime)."""

    uri: str
    fs: object  # pyarrow.fs.FileSystem
    path: str
    files: dict[str, tuple[int, int]]
    folders: tuple[str, ...]

    def child(self, name: str) -> str:
        """A file's or subfolder's URI (the query part, e.g. ?endpoint_override=..., kept at the end)."""
        base, _, query = self.uri.partition("?")
        return f"{base.rstrip('/')}/{name}" + (f"?{query}" if query else "")


def _one_line(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return re.sub(r"\s*\(Request ID: [^)]*\)", "", text)


def _aws_credentials_configured() -> bool:
    """Whether this process names AWS credentials (environment, a profile, the shared files, web identity); an
    instance role cannot be seen from here, so False only means none of those."""
    names = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
             "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
    files = (os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"), os.environ.get(
        "AWS_CONFIG_FILE", "~/.aws/config"))
    return any(os.environ.get(n) for n in names) or any(Path(f).expanduser().is_file() for f in files)


def _why(err: Exception, uri: str, field: str) -> InputError:
    """One line for a filesystem error: a missing bucket, access denied, bad or missing credentials, or else."""
    text = _one_line(err)
    unseen = uri.startswith("s3://") and not _aws_credentials_configured()
    none_here = "; no credentials are configured here (environment, AWS_PROFILE, ~/.aws), and an instance role " \
                "cannot be seen from here"
    if re.search(r"NO_SUCH_BUCKET|bucket does not exist|Bucket '[^']*' not found", text):
        return InputError(field, "the bucket does not exist", got=uri, allowed="check the bucket name (and the "
                          "region or endpoint: AWS_ENDPOINT_URL, AWS_DEFAULT_REGION)")
    if re.search(r"ACCESS_DENIED|AccessDenied|Forbidden|HTTP status 403", text):
        return InputError(field, f"access denied ({text})", got=uri, allowed="credentials that may list and read the "
                          "prefix (s3:ListBucket on the bucket, s3:GetObject on the objects); on a cluster, the "
                          "worker profile of cluster.yaml (LORA_SWEEP_DATA in cluster/create-worker-profile.sh)"
                          + (none_here if unseen else ""))
    if re.search(r"credential|INVALID_ACCESS_KEY_ID|InvalidAccessKeyId|SIGNATURE_DOES_NOT_MATCH|SignatureDoesNotMatch|"
                 r"security token", text, re.I):
        return InputError(field, f"no usable credentials ({text})", got=uri, allowed="set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run where an instance role applies")
    if unseen:
        return InputError(field, f"cannot read it, and no credentials are configured here ({text})", got=uri,
                          allowed="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where an "
                                  "instance role applies")
    return InputError(field, f"cannot read it ({text})", got=uri,
                      allowed="a URI pyarrow can open: s3://bucket/prefix, gs://bucket/prefix, hdfs://..., file:///...")


SPLITS_HINT = "the prefix that holds the split files, e.g. s3://bucket/data/sst2 with train.tsv and dev.tsv"


def list_folder(uri: str, field: str = FIELD, hint: str = SPLITS_HINT) -> RemoteFolder:
    """The folder at `uri`, listed; one line if it cannot be opened or holds nothing (`hint`: what belongs there)."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    from record.ray_files import check_bucket

    check_bucket(uri, field)
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        entries = fs.get_file_info(pafs.FileSelector(path.rstrip("/")))
    except FileNotFoundError:
        entries = []  # the bucket exists (else: NO_SUCH_BUCKET below), the prefix holds nothing
    except (OSError, ValueError, pa.ArrowException) as err:
        raise _why(err, uri, field) from None
    files = {Path(e.path).name: (int(e.size or 0), int(e.mtime_ns or 0))
             for e in entries if e.type == pafs.FileType.File}
    folders = tuple(sorted(Path(e.path).name for e in entries if e.type == pafs.FileType.Directory))
    if not files and not folders:
        raise InputError(field, "nothing under this prefix (no objects)", got=uri, allowed=hint)
    return RemoteFolder(uri, fs, path.rstrip("/"), files, folders)


def fetched(folder: RemoteFolder, name: str, cache: Path, field: str = FIELD) -> Path:
    """A local copy of one object of `folder`, fetched once per (URI, size, mtime) into `cache`; the copy is written
    atomically and refused when its size is not the listed size (a truncated transfer or object)."""
    size, mtime = folder.files[name]
    key = hashlib.sha256(json.dumps([folder.child(name), size, mtime]).encode()).hexdigest()[:20]
    target = cache / "remote" / key / name
    if target.is_file() and target.stat().st_size == size:
        return target
    tmp = target.with_name(f".{name}.tmp{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        dst = open(tmp, "wb")
    except OSError as err:
        raise InputError("LORA_SWEEP_CACHE", f"cannot write the node's cache at {target.parent} ({err})",
                         allowed="a writable folder with room for the fetched files") from None
    with dst:  # only the remote side's errors are the object's; a local write error (disk full) is raised as it is
        try:
            src = folder.fs.open_input_stream(f"{folder.path}/{name}")
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise _why(err, folder.child(name), field) from None
        with src:
            while True:
                try:
                    chunk = src.read(1 << 22)
                except OSError as err:
                    tmp.unlink(missing_ok=True)
                    raise _why(err, folder.child(name), field) from None
                if not chunk:
                    break
                dst.write(chunk)
    got = tmp.stat().st_size
    if got != size:
        tmp.unlink(missing_ok=True)
        raise InputError(field, f"{folder.child(name)}: truncated (read {got:,} of {size:,} bytes)",
                         allowed="upload the object again; then rerun")
    os.replace(tmp, target)
    return target


__all__ = ["RemoteFolder", "cache_root", "fetched", "is_uri", "list_folder"]
