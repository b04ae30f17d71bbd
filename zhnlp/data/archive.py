"""Archives in a download: zip, tar and tar.gz, selected members only, capped and checked.

A ``downloads.<name>.<file>`` entry with an ``extract`` mapping is an archive. Its ``sha256``
pins the archive's bytes and ``max_bytes``/``deadline_s`` bound its download as for any file
(zhnlp/data/download.py); ``extract`` (an :class:`ArchiveSpec`) says what comes out of it::

    downloads:
      clue:                                  # -> data/downloads/clue/
        tnews_public.zip:                    # the archive; kept there only with keep_archive: true
          url: https://storage.googleapis.com/cluebenchmark/tasks/tnews_public.zip
          sha256: <64 hex characters of the zip>
          extract:
            members: [train.json, dev.json, test.json, labels.json]   # exact names or globs
            dest: tnews                      # folder under data/downloads/clue ("." = that folder, the default)
            strip_components: 0              # leading folders dropped from each member name (default 0)
            format: auto                     # auto (from the bytes) | zip | tar | tar.gz | tgz
            max_bytes: 17179869184           # cap on the bytes read out of the archive (default 16 GiB)
            max_members: 100000              # cap on the archive's member count (default 100000)
            keep_archive: false              # true: the archive stays at its file key too

Member names are matched with leading ``./`` and a folder's trailing ``/`` dropped. A pattern is
matched one path component at a time: ``*``, ``?`` and ``[...]`` stay within a component, a
``**`` component matches any number of folders (``data/**/*.json``). Every pattern must select
at least one regular file; a folder named exactly is refused with a hint to use ``name/**``.

Refused, with a one-line error naming the archive (its URL) and the member:

- any member with an absolute name, a ``..`` component, a control character or ``\\``;
- any link (symbolic or hard) whose target leaves the archive's folder, selected or not;
- a selected link, device, FIFO or encrypted member (only regular files are written);
- more than ``max_members`` members (a tar is counted while it streams);
- more than ``max_bytes`` bytes: checked against the declared sizes before any data is read
  (a zip: its selected members, all from the central directory, before the first write; a tar,
  which is read through: every member's data, as each header arrives) and again while the bytes
  stream. A zip member whose header understates its data stops at the declared size (zipfile
  then reports the CRC mismatch); a tar stream may not run more than ``TAR_HEADROOM`` (1 MiB)
  past the data its members declared, so an oversized pax record or long name stops early too;
- a selected member that is missing, two members landing on one path, a path some other
  entry already wrote.

Files are written fresh (never over an existing path) with mode 0644 and no archive metadata,
so the output depends on the archive's content alone. Writing happens in the caller's staging
folder (:func:`zhnlp.data.download.fetch_into`), which is removed whole on any failure.
"""

from __future__ import annotations

import fnmatch
import gzip
import os
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from zhnlp.config import ConfigError, in_range
from zhnlp.errors import UserError

CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 16 << 30  # four times the largest download we allow by default
DEFAULT_MAX_MEMBERS = 100_000
MAX_LINK_TARGET = 4096  # a zip stores a symbolic link's target as the member's data
TAR_HEADROOM = 1 << 20  # tar bytes allowed past the declared data: headers, padding, long names, pax records
GLOB_CHARS = frozenset("*?[")


class ArchiveError(UserError):
    """An archive that may not be extracted; the message names the archive, the member and the reason."""


def _bad_chars(text: str) -> bool:
    return any(ord(c) < 32 or c in "\\\x7f" for c in text)


def _pattern_problem(pattern: object) -> str | None:
    if not isinstance(pattern, str) or not pattern:
        return "use a member name or glob such as train.json or data/*.json"
    if _bad_chars(pattern) or pattern.startswith("/"):
        return "use a relative name without control characters or '\\'"
    if any(part in ("", ".", "..") for part in pattern.split("/")):
        return "use a name as the archive lists it, without '.', '..', '//' or a trailing '/'"
    return None


@dataclass(frozen=True)
class ArchiveSpec:
    """One ``downloads.<name>.<file>.extract`` entry."""

    members: tuple[str, ...]
    dest: str = "."
    strip_components: int = 0
    format: Literal["auto", "zip", "tar", "tar.gz", "tgz"] = "auto"
    max_bytes: int = DEFAULT_MAX_BYTES
    max_members: int = DEFAULT_MAX_MEMBERS
    keep_archive: bool = False

    def validate(self, where: str) -> None:
        if not self.members:
            raise ConfigError(f"{where}.members: empty; list member names or globs such as [train.json, 'data/*.json']")
        for i, pattern in enumerate(self.members):
            problem = _pattern_problem(pattern)
            if problem:
                raise ConfigError(f"{where}.members[{i}]: {pattern!r} is not allowed; {problem}")
        bad_dest = _pattern_problem(self.dest) or GLOB_CHARS & set(self.dest) or any(len(p.encode()) > 255 for p in self.dest.split("/"))
        if self.dest != "." and bad_dest:
            raise ConfigError(f"{where}.dest: {self.dest!r} is not allowed; use '.' or a relative folder like tnews (no '..', '//', glob or leading '/')")
        in_range(f"{where}.strip_components", self.strip_components, 0, 64)
        in_range(f"{where}.max_bytes", self.max_bytes, 1, 1 << 50)
        in_range(f"{where}.max_members", self.max_members, 1, 10_000_000)


@dataclass
class Member:
    """What the checks need of one archive member, whatever the format."""

    raw: str  # the name as stored
    kind: Literal["file", "dir", "symlink", "hardlink", "special"]
    size: int  # declared data size
    target: str = ""  # a link's target
    encrypted: bool = False


def _parts(label: str, raw: str) -> list[str]:
    """The member's name as path components; refuses names that could leave the output folder."""
    if _bad_chars(raw):
        raise ArchiveError(f"{label}: member {raw!r} is not allowed; its name holds a control character or '\\'")
    if raw.startswith("/"):
        raise ArchiveError(f"{label}: member {raw!r} is not allowed; its name is an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"{label}: member {raw!r} is not allowed; its name has a '..' component")
    return parts


def _link_leaves(parts: list[str], member: Member) -> bool:
    """True when a link's target points outside the archive's folder."""
    if member.target.startswith("/") or not member.target:
        return True
    base = parts[:-1] if member.kind == "symlink" else []  # a hard link's target is a member name
    depth = len(base)
    for part in member.target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _matches(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_matches(rest, parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _matches(rest, parts[1:])


class _Plan:
    """The checks and counters shared by both formats, one member at a time."""

    def __init__(self, spec: ArchiveSpec, out_root: Path, label: str, count_all: bool):
        self.spec, self.label, self.count_all = spec, label, count_all
        self.out_root = out_root
        self.dest = [] if spec.dest == "." else spec.dest.split("/")
        self.patterns = [p.split("/") for p in spec.members]
        self.used: set[int] = set()
        self.dirs: set[str] = set()
        self.landed: dict[str, str] = {}
        self.members = self.declared = self.written = self.files = 0

    def admit(self, member: Member) -> Path | None:
        """Check one member; its output path when it is a selected regular file."""
        self.members += 1
        if self.members > self.spec.max_members:
            raise ArchiveError(f"{self.label}: more than extract.max_members={self.spec.max_members} members")
        parts = _parts(self.label, member.raw)
        if member.kind in ("symlink", "hardlink") and _link_leaves(parts, member):
            raise ArchiveError(f"{self.label}: member {member.raw!r} is a link to {member.target!r}, outside the archive's folder")
        hits = [i for i, pattern in enumerate(self.patterns) if _matches(pattern, parts)]
        if self.count_all:
            self._declare(member.size, "the members")
        for k in range(1, len(parts) + (member.kind == "dir")):  # folders, listed or implied, for finish()'s hint
            self.dirs.add("/".join(parts[:k]))
        if member.kind == "dir":
            return None
        if not hits:
            return None
        self.used.update(hits)
        if member.kind != "file":
            what = {"symlink": "a symbolic link", "hardlink": "a hard link", "special": "a device, FIFO or other special file"}[member.kind]
            raise ArchiveError(f"{self.label}: member {member.raw!r} is {what}; only regular files are extracted")
        if member.encrypted:
            raise ArchiveError(f"{self.label}: member {member.raw!r} is encrypted; only plain members are extracted")
        if len(parts) <= self.spec.strip_components:
            raise ArchiveError(f"{self.label}: member {member.raw!r} has no name left after extract.strip_components={self.spec.strip_components}")
        rel = "/".join(self.dest + parts[self.spec.strip_components:])
        if rel in self.landed:
            raise ArchiveError(f"{self.label}: members {self.landed[rel]!r} and {member.raw!r} both land at {rel!r}")
        self.landed[rel] = member.raw
        if not self.count_all:
            self._declare(member.size, "the selected members")
        return self.out_root / rel

    def _declare(self, size: int, what: str) -> None:
        self.declared += size
        if self.declared > self.spec.max_bytes:
            raise ArchiveError(f"{self.label}: {what} declare more than extract.max_bytes={self.spec.max_bytes} bytes")

    def write(self, member: Member, src: BinaryIO, path: Path) -> None:
        """Stream one member's data to a new file at ``path``, counting against both caps."""
        rel = path.relative_to(self.out_root).as_posix()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            root = os.path.realpath(self.out_root)
            if os.path.commonpath([root, os.path.realpath(path.parent)]) != root:
                raise ArchiveError(f"{self.label}: member {member.raw!r} would land outside the output folder")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except (FileExistsError, NotADirectoryError):
            raise ArchiveError(f"{self.label}: member {member.raw!r} lands at {rel!r}, a path another entry or member already wrote") from None
        except OSError as err:
            raise ArchiveError(f"{self.label}: member {member.raw!r}: cannot write {rel!r}: {err.strerror or err}") from None
        size = 0
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)  # whatever the umask or the archive says
            while block := src.read(CHUNK):  # read errors are the archive's (extract() reports them)
                size += len(block)
                self.written += len(block)
                if size > member.size:
                    raise ArchiveError(f"{self.label}: member {member.raw!r} holds more than the {member.size} bytes its header declares")
                if self.written > self.spec.max_bytes:
                    raise ArchiveError(f"{self.label}: more than extract.max_bytes={self.spec.max_bytes} bytes extracted")
                try:
                    out.write(block)
                except OSError as err:
                    raise ArchiveError(f"{self.label}: cannot write {rel!r}: {err.strerror or err}") from None
        if size != member.size:
            raise ArchiveError(f"{self.label}: member {member.raw!r} holds {size} bytes, its header declares {member.size}")
        self.files += 1

    def finish(self) -> None:
        """Every pattern must have selected a regular file."""
        for i, pattern in enumerate(self.spec.members):
            if i in self.used:
                continue
            if pattern in self.dirs:
                raise ArchiveError(f"{self.label}: selected member {pattern!r} is a folder; select its files with '{pattern}/**'")
            what = "matches no member" if GLOB_CHARS & set(pattern) else "is not in the archive"
            raise ArchiveError(f"{self.label}: selected member {pattern!r} {what} (extract.members[{i}])")


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> Member:
    mode = info.external_attr >> 16 if info.create_system == 3 else 0  # 3: unix, the only system storing a file type
    kind = "dir" if info.is_dir() else "file"
    target = ""
    if stat.S_ISLNK(mode):
        kind = "symlink"
        if info.file_size > MAX_LINK_TARGET:
            raise ArchiveError(f"{label}: member {info.filename!r} is a symbolic link with a {info.file_size}-byte target")
        with zf.open(info) as src:
            target = src.read(MAX_LINK_TARGET + 1).decode("utf-8", "replace")
    elif stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # no type bits: a plain file (Python's zipfile writes none)
        kind = "special"
    return Member(info.filename, kind, info.file_size, target, bool(info.flag_bits & 0x1))


def _extract_zip(path: Path, plan: _Plan) -> None:
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if len(infos) > plan.spec.max_members:
            raise ArchiveError(f"{plan.label}: {len(infos)} members, more than extract.max_members={plan.spec.max_members}")
        todo = []
        for info in infos:
            member = _zip_member(zf, info, plan.label)
            out = plan.admit(member)  # every member checked, every declared size counted, before any write
            if out is not None:
                todo.append((info, member, out))
        plan.finish()
        for info, member, out in todo:
            with zf.open(info) as src:
                plan.write(member, src, out)


def _tar_member(info: tarfile.TarInfo) -> Member:
    if info.isreg():
        kind = "file"
    elif info.isdir():
        kind = "dir"
    elif info.issym() or info.islnk():
        kind = "symlink" if info.issym() else "hardlink"
    else:
        kind = "special"
    return Member(info.name, kind, info.size, info.linkname)


class _Metered:
    """The (decompressed) tar stream, readable only as far as the members seen so far declare.

    tarfile reads a pax record or a GNU long name whole into memory before it yields the member;
    this stops a header that claims gigabytes after :data:`TAR_HEADROOM` bytes instead.
    """

    def __init__(self, stream: BinaryIO, label: str):
        self.stream, self.label = stream, label
        self.read_bytes, self.limit, self.last = 0, TAR_HEADROOM, ""

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size if size >= 0 else CHUNK)
        self.read_bytes += len(data)
        if self.read_bytes > self.limit:
            where = f"after member {self.last!r}" if self.last else "before the first member"
            raise ArchiveError(f"{self.label}: more than {TAR_HEADROOM} bytes of tar headers {where}")
        return data

    def allow(self, info: tarfile.TarInfo) -> None:
        self.limit, self.last = self.read_bytes + info.size + TAR_HEADROOM, info.name


def _extract_tar(path: Path, plan: _Plan, compressed: bool) -> None:
    data_filter = getattr(tarfile, "data_filter", None)  # Python >= 3.11.4: a second opinion after ours
    with open(path, "rb") as raw, (gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw) as stream:
        metered = _Metered(stream, plan.label)
        with tarfile.open(fileobj=metered, mode="r|") as tf:  # a stream: one pass, never seeking back
            for info in tf:  # each member checked as its header arrives, before its data is read
                member = _tar_member(info)
                out = plan.admit(member)  # the declared size is within the caps: let the stream carry it
                metered.allow(info)
                if out is None:
                    continue
                if data_filter is not None:
                    try:
                        data_filter(info, str(plan.out_root))
                    except tarfile.FilterError as err:
                        raise ArchiveError(f"{plan.label}: member {member.raw!r} is refused by tarfile's data filter: {err}") from None
                src = tf.extractfile(info)
                if src is None:
                    raise ArchiveError(f"{plan.label}: member {member.raw!r} has no data to extract")
                plan.write(member, src, out)
    plan.finish()


def sniff(path: Path) -> str:
    """The archive format of ``path`` from its first bytes: zip, tar.gz or (otherwise) tar."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    return "tar" if head[257:262] == b"ustar" or not zipfile.is_zipfile(path) else "zip"


def extract(path: Path, out_root: Path, spec: ArchiveSpec, label: str) -> tuple[int, int]:
    """The selected members of the archive at ``path`` into ``out_root``; (files, bytes) written.

    ``label`` (the archive's URL) starts every error message. On an error, files already
    written stay in ``out_root``: the caller's staging folder is removed whole.
    """
    fmt = sniff(path) if spec.format == "auto" else {"tgz": "tar.gz"}.get(spec.format, spec.format)
    plan = _Plan(spec, Path(out_root), label, count_all=fmt != "zip")
    try:
        if fmt == "zip":
            _extract_zip(path, plan)
        else:
            _extract_tar(path, plan, compressed=fmt == "tar.gz")
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ArchiveError(f"{label}: not a readable {fmt} archive: {reason}") from None
    return plan.files, plan.written


def unpack(archive: Path, out_root: Path, rel: str, spec: ArchiveSpec, label: str) -> tuple[int, int]:
    """:func:`extract`, then the archive moves to ``out_root/rel`` (``keep_archive``) or goes."""
    counts = extract(archive, out_root, spec, label)
    if not spec.keep_archive:
        archive.unlink()
        return counts
    target = Path(out_root) / rel
    if target.exists() or target.is_symlink():
        raise ArchiveError(f"{label}: cannot keep the archive at {rel!r}; a member landed there")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ArchiveError(f"{label}: cannot keep the archive at {rel!r}; a member file is in the way") from None
    os.chmod(archive, 0o644)
    os.replace(archive, target)
    return counts
