"""A run directory at a filesystem URI (`s3://bucket/prefix`, `gs://...`, `file:///abs/path`): what a
sharded run keeps there, and the copies that keep it there.

The run store needs a POSIX filesystem (SQLite, WAL), an object store is not one. So every process of
a URI run works in a local scratch directory with the same store, parts and lock code as a local run,
and `RunDirSync` copies that directory to the URI:

    worker scratch/run/  ── every `sync_s` and at the shard's end ──▶  URI/shards/<k>/
      run.sqlite (live, WAL)     SQLite's online backup: a consistent   run.sqlite (a snapshot)
      parquet/part-*.parquet     closed parts, new or rewritten         parquet/part-*.parquet
      manifest.json                                                     manifest.json, progress.json

A shard that starts (the first time, again after its worker died, or on `--resume URI`) first
downloads `URI/shards/<k>/` into its scratch, so it resumes from the last snapshot: the answers
committed after that snapshot are paid for again, so `sync_s` bounds what a killed worker costs.

The filesystem is pyarrow's (`pyarrow.fs.FileSystem.from_uri`), with its usual credentials: for
`s3://`, `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), `~/.aws/credentials`
with `AWS_PROFILE`, or an instance role; the region by `AWS_DEFAULT_REGION` or `?region=` in the URI; an
S3-compatible store by the URI's options (`s3://bucket/prefix?endpoint_override=host:9000&scheme=http`).
For `gs://`, `GOOGLE_APPLICATION_CREDENTIALS`. The variables in `CREDENTIAL_VARIABLES` that are set
where the run starts travel to the workers with the job's API keys; files and roles must be on every node.

Limits: a URI has no lock (two drivers on one URI are not stopped, as a local RUN_DIR's lock would);
the job file and its dataset still sit at the same path on every node; Parquet parts close every 300 s
or 100,000 rows, so a reader of the URI during a run sees the rows of closed parts only (the store
snapshot is what a shard resumes from); the driver's scratch holds every shard's store at the end.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pyarrow.fs as pafs  # type: ignore[import-untyped, unused-ignore]
import structlog

from evalpipe.errors import ConfigError
from evalpipe.pipeline.output.manifest import MANIFEST_FILENAME
from evalpipe.pipeline.output.rows import STATUSES
from evalpipe.pipeline.output.sharded import SHARDS_DIRNAME
from evalpipe.pipeline.output.store import STORE_FILENAME

log = structlog.get_logger("evalpipe.run")
PROGRESS_FILENAME = "progress.json"  # a shard's committed rows per status, as of its last sync
SYNC_S = 5.0  # the default interval between a shard's copies to the URI
# Where pyarrow's S3 and GCS filesystems look for credentials and a region: the workers need them too.
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                        "AWS_DEFAULT_REGION", "AWS_REGION", "GOOGLE_APPLICATION_CREDENTIALS")
_ANALYSIS_FILES = ("manifest.json", "best_of.parquet")
_PART_GLOB = "part-*.parquet"


def is_uri(location: str | Path | None) -> bool:
    """Whether `location` is a filesystem URI (`scheme://...`) rather than a local path."""
    if not isinstance(location, str):
        return False
    scheme, sep, _ = location.partition("://")
    return bool(sep) and scheme.isidentifier()


def join_uri(uri: str, *names: str) -> str:
    """`uri` with `names` appended as path segments."""
    return "/".join([uri.rstrip("/"), *names])


class RemoteDir:
    """A directory at a filesystem URI, addressed by paths relative to it."""

    def __init__(self, uri: str) -> None:
        try:
            self.filesystem, self.root = pafs.FileSystem.from_uri(uri)
        except (ValueError, OSError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise ConfigError(f"{uri}: not a filesystem URI pyarrow can open ({error})") from None
        self.uri = uri.rstrip("/")
        self.root = self.root.rstrip("/")

    def _path(self, relative: str) -> str:
        return f"{self.root}/{relative}" if relative else self.root

    def exists(self, relative: str) -> bool:
        """Whether the file `relative` exists."""
        info = self.filesystem.get_file_info(self._path(relative))
        return bool(info.type == pafs.FileType.File)

    def files(self, relative: str = "") -> list[str]:
        """The files under `relative` (recursively), as paths relative to this directory."""
        selector = pafs.FileSelector(self._path(relative), recursive=True, allow_not_found=True)
        prefix = len(self.root) + 1
        return sorted(info.path[prefix:] for info in self.filesystem.get_file_info(selector)
                      if info.type == pafs.FileType.File)

    def download(self, relative: str, local: Path) -> bool:
        """Copy the file `relative` to `local`; False when there is no such file."""
        if not self.exists(relative):
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self._path(relative), str(local), source_filesystem=self.filesystem,
                        destination_filesystem=pafs.LocalFileSystem(), use_threads=False)
        return True

    def upload(self, local: Path, relative: str) -> None:
        """Copy `local` to `relative`, under a temporary name first: a reader (or a shard restarting after
        this process died mid-copy) sees the old file or the new one, never half of one."""
        target = self._path(relative)
        parent, _, name = target.rpartition("/")
        temporary = f"{parent}/.{name}.uploading"
        self.filesystem.create_dir(parent, recursive=True)
        pafs.copy_files(str(local), temporary, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.filesystem, use_threads=False)
        self.filesystem.move(temporary, target)

    def read_text(self, relative: str) -> str | None:
        """The content of the file `relative`, None when there is none."""
        try:
            with self.filesystem.open_input_stream(self._path(relative)) as stream:
                text: str = stream.read().decode("utf-8")
        except FileNotFoundError:
            return None
        return text

    def delete(self, relative: str) -> None:
        """Remove the file `relative` (nothing when it is gone already)."""
        with contextlib.suppress(FileNotFoundError):
            self.filesystem.delete_file(self._path(relative))


@contextlib.contextmanager
def remote_access(uri: str) -> Iterator[None]:
    """A failed read or write at `uri` as a ConfigError that says what to check (credentials, bucket)."""
    try:
        yield
    except OSError as error:
        raise ConfigError(f"{uri}: cannot be read or written ({str(error).strip().splitlines()[0]}); check that it "
                          "exists and that pyarrow finds credentials for it (for s3://: AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and AWS_DEFAULT_REGION or ?region= in the URI; "
                          "for gs://: GOOGLE_APPLICATION_CREDENTIALS)") from None


def snapshot_store(store: Path, snapshot: Path) -> None:
    """A consistent copy of the live store file `store` (and its WAL) in `snapshot`, through SQLite's
    online backup, taken while the run goes on writing; a file of its own (no WAL beside it)."""
    snapshot.unlink(missing_ok=True)
    # Not `mode=ro`: a read-only connection cannot open a WAL database whose -shm file is gone.
    source = sqlite3.connect(store, timeout=30)
    target = sqlite3.connect(snapshot)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # the copy was WAL like its source: one file to upload
    finally:
        target.close()
        source.close()


def _status_counts(store: Path) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
    connection = sqlite3.connect(store)
    try:
        for status, n in connection.execute("SELECT status, COUNT(*) FROM rows GROUP BY status"):
            counts[status] = counts.get(status, 0) + int(n)
    except sqlite3.OperationalError:  # no tables yet
        pass
    finally:
        connection.close()
    return counts


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


@dataclass(slots=True)
class RunDirSync:
    """Keeps the remote copy of one local run directory (a shard's scratch) up to date.

    `restore` before the run, `push` whenever a copy is due (`every` pushes each `interval_s`), and one
    last `push` at the end. Only the store (as a snapshot), the closed Parquet parts and the manifest are
    copied: CSV and JSONL are rebuilt from the store, and the merged ones are the driver's."""

    local: Path
    remote: RemoteDir
    interval_s: float = SYNC_S
    parquet_dirname: str = "parquet"
    _pushed: dict[str, object] = field(default_factory=dict)  # relative name -> local stamp
    _remote_parts: set[str] = field(default_factory=set)

    def restore(self) -> list[str]:
        """Download the remote copy into `local` (created if needed); the files it held."""
        self.local.mkdir(parents=True, exist_ok=True)
        names = self.remote.files()
        for name in names:
            if name.rpartition("/")[2].startswith("."):  # a copy cut short by a dead process
                continue
            self.remote.download(name, self.local / name)
            self._pushed[name] = _stamp(self.local / name)
            if name.startswith(f"{self.parquet_dirname}/"):
                self._remote_parts.add(name)
        return names

    def push(self) -> int:
        """Copy what changed since the last push; the number of files copied."""
        copied = 0
        parts = {f"{self.parquet_dirname}/{part.name}": part
                 for part in sorted((self.local / self.parquet_dirname).glob(_PART_GLOB))}
        for name, part in parts.items():
            copied += self._push_file(part, name)
        for stale in self._remote_parts - set(parts):  # renumbered by a resume's rebuild
            self.remote.delete(stale)
            self._pushed.pop(stale, None)
        self._remote_parts = set(parts)
        copied += self._push_file(self.local / MANIFEST_FILENAME, MANIFEST_FILENAME)
        store = self.local / STORE_FILENAME
        stamp = (_stamp(store), _stamp(store.with_name(STORE_FILENAME + "-wal")))
        if store.is_file() and self._pushed.get(STORE_FILENAME) != stamp:
            with tempfile.TemporaryDirectory(prefix="evalpipe-snapshot-") as staging:
                snapshot = Path(staging) / STORE_FILENAME
                snapshot_store(store, snapshot)
                progress = Path(staging) / PROGRESS_FILENAME
                progress.write_text(json.dumps(_status_counts(snapshot)), encoding="utf-8")
                self.remote.upload(snapshot, STORE_FILENAME)
                self.remote.upload(progress, PROGRESS_FILENAME)
            self._pushed[STORE_FILENAME] = stamp
            copied += 1
        return copied

    def _push_file(self, path: Path, name: str) -> int:
        stamp = _stamp(path)
        if stamp is None or self._pushed.get(name) == stamp:
            return 0
        try:
            self.remote.upload(path, name)
        except FileNotFoundError:  # a part moved by a rebuild under way: the next push has it
            return 0
        self._pushed[name] = stamp
        return 1

    async def every(self) -> None:
        """Push every `interval_s` until cancelled; a failed copy is logged and tried again next time."""
        while True:
            await anyio.sleep(self.interval_s)
            try:
                await anyio.to_thread.run_sync(self.push)
            except (OSError, sqlite3.Error) as error:
                log.warning("copy to the run's URI failed; trying again", uri=self.remote.uri, error=str(error))


def remote_progress(remote: RemoteDir, shards: int) -> dict[str, int]:
    """Rows per status every shard of the run at `remote` had committed at its last sync."""
    counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for index in range(shards):
        try:
            text = remote.read_text(f"{SHARDS_DIRNAME}/{index}/{PROGRESS_FILENAME}")
            found = json.loads(text) if text is not None else {}
        except (OSError, ValueError):  # a progress display is not worth a failed run
            continue
        for status, n in found.items():
            counts[status] = counts.get(status, 0) + int(n)
    return counts


def pull_stores(remote: RemoteDir, local: Path, *, shards_only: bool = False) -> None:
    """The run's store, its manifest and every shard's store snapshot from `remote` into `local` (what the
    driver reads: the run's identity, the rows each shard has committed); with `shards_only`, the shards'
    stores alone. A store beside a stale WAL is replaced whole."""
    for name in remote.files():
        store = name.rpartition("/")[2] == STORE_FILENAME
        if store and name.startswith(f"{SHARDS_DIRNAME}/") or not shards_only and (store or name == MANIFEST_FILENAME):
            for stale in (STORE_FILENAME + "-wal", STORE_FILENAME + "-shm"):
                (local / name).with_name(stale).unlink(missing_ok=True)
            remote.download(name, local / name)


def push_files(local: Path, remote: RemoteDir, names: Iterable[str]) -> None:
    """Copy the files `names` (relative to `local`; those that exist) to `remote`; a store file as a
    consistent snapshot."""
    for name in names:
        path = local / name
        if not path.is_file():
            continue
        if path.name != STORE_FILENAME:
            remote.upload(path, name)
            continue
        with tempfile.TemporaryDirectory(prefix="evalpipe-snapshot-") as staging:
            snapshot_store(path, Path(staging) / STORE_FILENAME)
            remote.upload(Path(staging) / STORE_FILENAME, name)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A local directory for a URI run's files, removed at the end (its content is at the URI by then)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def downloaded_for_analysis(uri: str) -> Iterator[Path]:
    """The files of the run at `uri` that analysis reads (manifest, Parquet parts, best-of) in a local
    temporary directory, for as long as the context lasts."""
    remote = RemoteDir(uri)
    with remote_access(uri):
        names = [name for name in remote.files() if name in _ANALYSIS_FILES or (
            name.endswith(".parquet") and not name.rpartition("/")[2].startswith("."))]
    if not names:
        raise ConfigError(f"{uri} holds no evalpipe run (no {MANIFEST_FILENAME}, no Parquet parts)")
    with scratch_dir("evalpipe-read-") as local:
        with remote_access(uri):
            for name in names:
                remote.download(name, local / name)
        yield local


__all__ = ["CREDENTIAL_VARIABLES", "PROGRESS_FILENAME", "SYNC_S", "RemoteDir", "RunDirSync", "downloaded_for_analysis",
           "is_uri", "join_uri", "pull_stores", "push_files", "remote_access", "remote_progress", "scratch_dir",
           "snapshot_store"]
