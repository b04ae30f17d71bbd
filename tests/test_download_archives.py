"""download@ with zip and tar(.gz) archives, against a real HTTP server on 127.0.0.1 serving archives built
here from the CLUE tnews files in ../shared/data: selected members into the corpus layout, byte for byte,
and hostile archives (escaping names, links, devices, bombs, too many members) refused with one line and
nothing left behind."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import stat
import struct
import subprocess
import tarfile
import threading
import time
import zipfile

import pytest
import yaml
from conftest import make_project, project_env
from shared_data import shared_data_dir

from zhnlp.config import ConfigError
from zhnlp.data.archive import ArchiveError
from zhnlp.data.clue import ClueParams, split_paths
from zhnlp.data.download import ChecksumError, download_specs, fetch_into

# the official CLUE zips hold train/dev/test/labels; our samples are the FewCLUE files of the same task
TNEWS = {"train.json": "train_few_all.json", "dev.json": "dev_few_all.json", "test.json": "test.json", "labels.json": "labels.json"}


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, folder): whatever a test writes into the folder is served over HTTP."""
    folder = tmp_path_factory.mktemp("served")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", folder
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def tnews():
    """Official name -> bytes of the real file, and the unlabeled file no test selects."""
    root = shared_data_dir() / "clue" / "tnews"
    return {name: (root / src).read_bytes() for name, src in TNEWS.items()}, (root / "unlabeled.json").read_bytes()


def zip_bytes(members) -> bytes:
    """members: (name, data) or a ready ZipInfo with its data."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def tar_bytes(members, gz: bool = True) -> bytes:
    """members: (TarInfo or name, data or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=tarfile.GNU_FORMAT) as tf:
        for info, data in members:
            if isinstance(info, str):
                info = tarfile.TarInfo(info)
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tar_info(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def entry(served, name, data, **extract):
    """A download entry for ``data`` served as ``name``, its sha256 pinned."""
    base, folder = served
    (folder / name).write_bytes(data)
    spec = {"url": f"{base}/{name}", "sha256": hashlib.sha256(data).hexdigest()}
    if extract:
        spec["extract"] = extract
    return spec


def leftovers(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


def tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def official_members(tnews, prefix):
    files, unlabeled = tnews
    return [(f"{prefix}{name}", data) for name, data in files.items()] + [(f"{prefix}extra/train.json", unlabeled)]


@pytest.mark.parametrize("fmt", ["zip", "tar.gz", "tar"])
def test_selected_members_land_in_the_layout_byte_for_byte(served, tnews, tmp_path, fmt):
    files, _ = tnews
    if fmt == "zip":
        data = zip_bytes([("tnews_public/", b"")] + official_members(tnews, "tnews_public/"))
        members = [f"tnews_public/{name}" for name in files]
    else:  # names as `tar -C dir -c .` writes them, picked by globs: '*' stays inside a folder
        data = tar_bytes([(tar_info("./tnews_public", tarfile.DIRTYPE), None)] + official_members(tnews, "./tnews_public/"), gz=fmt == "tar.gz")
        members = ["tnews_public/t*.json", "**/dev.json", "tnews_public/labels.json"]
    name = f"tnews_public.{'tgz' if fmt == 'tar.gz' else fmt}"
    specs = download_specs({name: entry(served, name, data, members=members, dest="tnews", strip_components=1)}, "downloads.clue")
    out = tmp_path / "downloads" / "clue"

    done = fetch_into(specs, out)
    assert tree(out) == {f"tnews/{name}": content for name, content in files.items()}, "only the selected members, byte for byte"
    assert (done.bytes, done.extracted_files, done.extracted_bytes) == (len(data), 4, sum(map(len, files.values())))
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()} == {0o644}
    assert leftovers(tmp_path / "downloads") == ["clue", "clue/tnews", *sorted(f"clue/tnews/{n}" for n in files)], "no archive, no staging"
    first = tree(out)
    fetch_into(specs, out)
    assert tree(out) == first, "a rerun writes the same bytes"


def test_keep_archive_and_plain_files_beside_members(served, tnews, tmp_path):
    files, _ = tnews
    data = zip_bytes(official_members(tnews, ""))
    entries = {
        "archives/tnews_public.zip": entry(served, "keep.zip", data, members=["train.json", "dev.json"], dest="tnews", keep_archive=True),
        "tnews/labels.json": entry(served, "labels.json", files["labels.json"]),
    }
    out = tmp_path / "clue"
    done = fetch_into(download_specs(entries, "downloads.clue"), out)
    assert tree(out) == {"archives/tnews_public.zip": data, "tnews/train.json": files["train.json"], "tnews/dev.json": files["dev.json"],
                         "tnews/labels.json": files["labels.json"]}
    assert (done.extracted_files, done.bytes) == (2, len(data) + len(files["labels.json"]))
    assert stat.S_IMODE((out / "archives/tnews_public.zip").stat().st_mode) == 0o644


def fails(specs, tmp_path, exc, message):
    """fetch_into fails with a one-line ``message`` and leaves nothing under tmp_path/downloads."""
    t0 = time.monotonic()
    with pytest.raises(exc, match=message) as err:
        fetch_into(specs, tmp_path / "downloads" / "corpus")
    assert time.monotonic() - t0 < 10
    assert "\n" not in str(err.value) and str(err.value).startswith("http://127.0.0.1:")
    assert leftovers(tmp_path / "downloads") == [], "no output, staging folder, archive or .part file"
    return err.value


def test_a_checksum_mismatch_extracts_nothing(served, tnews, tmp_path):
    spec = entry(served, "mismatch.zip", zip_bytes(official_members(tnews, "")), members=["train.json"])
    spec["sha256"] = "0" * 64
    fails(download_specs({"a.zip": spec}, "d"), tmp_path, ChecksumError, r"sha256 mismatch")


def zip_link(name, target):
    info = zipfile.ZipInfo(name)
    info.create_system, info.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
    return info, target


def zip_with(members, good=(("ok.json", b"{}"),)):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in [*good, *members]:
            zf.writestr(name, data)
    return buf.getvalue()


HOSTILE = [  # (id, archive bytes, selected members, message)
    ("tar-absolute", lambda: tar_bytes([("ok.json", b"{}"), ("/tmp/evil.json", b"x")]), ["ok.json"], r"member '/tmp/evil.json' is not allowed; its name is an absolute path$"),
    ("tar-dotdot", lambda: tar_bytes([("ok.json", b"{}"), ("a/../../evil.json", b"x")]), ["ok.json"], r"member 'a/\.\./\.\./evil.json' is not allowed; its name has a '\.\.' component$"),
    ("tar-symlink-out", lambda: tar_bytes([("ok.json", b"{}"), (tar_info("d/link", tarfile.SYMTYPE, "../../etc/passwd"), None)]), ["ok.json"],
     r"member 'd/link' is a link to '\.\./\.\./etc/passwd', outside the archive's folder$"),
    ("tar-symlink-abs", lambda: tar_bytes([(tar_info("link", tarfile.SYMTYPE, "/etc/passwd"), None), ("ok.json", b"{}")]), ["ok.json"], r"member 'link' is a link to '/etc/passwd'"),
    ("tar-hardlink-out", lambda: tar_bytes([("ok.json", b"{}"), (tar_info("h", tarfile.LNKTYPE, "../x"), None)]), ["ok.json"], r"member 'h' is a link to '\.\./x', outside"),
    ("tar-symlink-selected", lambda: tar_bytes([("ok.json", b"{}"), (tar_info("d/inside.json", tarfile.SYMTYPE, "../ok.json"), None)]), ["**/*.json"],
     r"member 'd/inside.json' is a symbolic link; only regular files are extracted$"),
    ("tar-device", lambda: tar_bytes([("ok.json", b"{}"), (tar_info("dev.json", tarfile.CHRTYPE), None)]), ["*.json"], r"member 'dev.json' is a device, FIFO or other special file"),
    ("tar-fifo", lambda: tar_bytes([(tar_info("fifo", tarfile.FIFOTYPE), None), ("ok.json", b"{}")]), ["fifo", "ok.json"], r"member 'fifo' is a device, FIFO"),
    ("zip-absolute", lambda: zip_with([("/evil.json", b"x")]), ["ok.json"], r"member '/evil.json' is not allowed; its name is an absolute path$"),
    ("zip-dotdot", lambda: zip_with([("../evil.json", b"x")]), ["ok.json"], r"member '\.\./evil.json' is not allowed; its name has a '\.\.' component$"),
    ("zip-backslash", lambda: zip_with([("..\\evil.json", b"x")]), ["ok.json"], r"member '\.\.\\\\evil\.json' is not allowed; its name holds a control character or '\\'$"),
    ("zip-symlink-out", lambda: zip_with([zip_link("link", "../../etc/passwd")]), ["ok.json"], r"member 'link' is a link to '\.\./\.\./etc/passwd', outside the archive's folder$"),
    ("zip-symlink-selected", lambda: zip_with([zip_link("a/link.json", "../ok.json")]), ["**"], r"member 'a/link.json' is a symbolic link; only regular files"),
]


@pytest.mark.parametrize(("build", "members", "message"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_members_are_refused_and_leave_nothing(served, tmp_path, build, members, message):
    data = build()
    name = f"hostile-{hashlib.sha256(data).hexdigest()[:12]}"
    fails(download_specs({"a": entry(served, name, data, members=members)}, "d"), tmp_path, ArchiveError, message)


def test_a_zip_bomb_stops_at_its_declared_size_or_its_lying_header(served, tmp_path):
    bomb = zip_bytes([("ok.json", b"{}"), ("bomb.json", b"\0" * (32 << 20))])  # 32 MiB of zeros in ~32 KiB
    assert len(bomb) < 100_000
    specs = download_specs({"a.zip": entry(served, "bomb.zip", bomb, members=["*.json"], max_bytes=1 << 20)}, "d")
    fails(specs, tmp_path, ArchiveError, r"the selected members declare more than extract\.max_bytes=1048576 bytes$")

    # the central directory now claims 1000 bytes: the declared total passes, the stream stops at 1000 bytes
    # and the data no longer matches its CRC
    lying = bytearray(bomb)
    record = lying.rfind(b"PK\x01\x02")
    struct.pack_into("<I", lying, record + 24, 1000)
    specs = download_specs({"a.zip": entry(served, "lying.zip", bytes(lying), members=["*.json"], max_bytes=1 << 20)}, "d")
    fails(specs, tmp_path, ArchiveError, r"lying\.zip: not a readable zip archive: Bad CRC-32 for file 'bomb\.json'$")


def test_a_tar_gz_bomb_is_refused_as_its_header_streams_in(served, tnews, tmp_path):
    files, _ = tnews
    zeros = tarfile.TarInfo("zz/bomb.bin")
    zeros.size = 64 << 20
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tf:
        info = tarfile.TarInfo("labels.json")
        info.size = len(files["labels.json"])
        tf.addfile(info, io.BytesIO(files["labels.json"]))
        tf.addfile(zeros, io.BytesIO(bytes(zeros.size)))
    data = buf.getvalue()
    assert len(data) < 1 << 20
    specs = download_specs({"a.tgz": entry(served, "bomb.tgz", data, members=["labels.json"], max_bytes=1 << 20)}, "d")
    t0 = time.process_time()
    fails(specs, tmp_path, ArchiveError, r"bomb\.tgz: the members declare more than extract\.max_bytes=1048576 bytes$")
    assert time.process_time() - t0 < 2, "refused at the header, not after inflating 64 MiB"


def test_a_tar_header_bomb_stops_while_streaming(served, tmp_path):
    """tarfile reads a pax record whole before yielding its member: 64 MiB of it must not reach memory."""
    info = tarfile.TarInfo("ok.json")
    info.size, info.pax_headers = 2, {"comment": "z" * (64 << 20)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT, compresslevel=1) as tf:
        tf.addfile(info, io.BytesIO(b"{}"))
    specs = download_specs({"a.tgz": entry(served, "pax.tgz", buf.getvalue(), members=["ok.json"])}, "d")
    fails(specs, tmp_path, ArchiveError, r"pax\.tgz: more than 1048576 bytes of tar headers before the first member$")


def test_member_count_is_capped(served, tmp_path):
    members = [(f"f{i:03}.json", b"{}") for i in range(50)]
    specs = download_specs({"a.zip": entry(served, "many.zip", zip_bytes(members), members=["f000.json"], max_members=10)}, "d")
    fails(specs, tmp_path, ArchiveError, r"many\.zip: 50 members, more than extract\.max_members=10$")
    specs = download_specs({"a.tgz": entry(served, "many.tgz", tar_bytes(members), members=["f000.json"], max_members=10)}, "d")
    fails(specs, tmp_path, ArchiveError, r"many\.tgz: more than extract\.max_members=10 members$")


@pytest.mark.parametrize(
    ("members", "extra", "message"),
    [
        (["tnews_public/train.json", "tnews_public/validation.json"], {}, r"selected member 'tnews_public/validation\.json' is not in the archive \(extract\.members\[1\]\)$"),
        (["**/*.csv"], {}, r"selected member '\*\*/\*\.csv' matches no member \(extract\.members\[0\]\)$"),
        (["tnews_public/extra"], {}, r"selected member 'tnews_public/extra' is a folder; select its files with 'tnews_public/extra/\*\*'$"),
        (["tnews_public/*.json"], {"strip_components": 2}, r"member 'tnews_public/train\.json' has no name left after extract\.strip_components=2$"),
    ],
)
def test_selection_mistakes_name_the_member(served, tnews, tmp_path, members, extra, message):
    data = zip_bytes(official_members(tnews, "tnews_public/"))
    name = f"sel-{hashlib.sha256(repr((members, extra)).encode()).hexdigest()[:8]}.zip"
    fails(download_specs({"a.zip": entry(served, name, data, members=members, **extra)}, "d"), tmp_path, ArchiveError, message)


def test_collisions_and_wrong_formats_fail_cleanly(served, tnews, tmp_path):
    files, _ = tnews
    archive = entry(served, "plain.zip", zip_bytes(official_members(tnews, "")), members=["labels.json"], dest="tnews")
    specs = download_specs({"z.zip": archive, "tnews/labels.json": entry(served, "labels.json", files["labels.json"])}, "d")
    fails(specs, tmp_path, ArchiveError, r"member 'labels\.json' lands at 'tnews/labels\.json', a path another entry or member already wrote$")
    twins = entry(served, "twins.zip", zip_bytes([("a/x.json", b"{}"), ("b/x.json", b"[]")]), members=["*/x.json"], strip_components=1)
    fails(download_specs({"t.zip": twins}, "d"), tmp_path, ArchiveError, r"members 'a/x\.json' and 'b/x\.json' both land at 'x\.json'$")
    as_tar = entry(served, "plain.zip", zip_bytes(official_members(tnews, "")), members=["labels.json"], format="tar.gz")
    fails(download_specs({"z.zip": as_tar}, "d"), tmp_path, ArchiveError, r"plain\.zip: not a readable tar\.gz archive: Not a gzipped file")
    junk = entry(served, "junk.tar", b"not an archive at all" * 40, members=["x"])
    fails(download_specs({"j.tar": junk}, "d"), tmp_path, ArchiveError, r"junk\.tar: not a readable tar archive")


EXTRACT = {"members": ["a.json"]}


@pytest.mark.parametrize(
    ("extract", "message"),
    [
        ({"member": ["a"]}, r"^d\.f\.extract: unknown key 'member'; allowed keys: dest, format, keep_archive, max_bytes, max_members, members, strip_components$"),
        ({}, r"^d\.f\.extract: missing required key 'members'$"),
        ({"members": []}, r"^d\.f\.extract\.members: empty; list member names or globs"),
        ({"members": "a.json"}, r"^d\.f\.extract\.members: 'a\.json' is not allowed; expected a list of str$"),
        ({"members": ["../a.json"]}, r"^d\.f\.extract\.members\[0\]: '\.\./a\.json' is not allowed"),
        ({"members": ["/a.json"]}, r"^d\.f\.extract\.members\[0\]: '/a\.json' is not allowed"),
        (EXTRACT | {"dest": "/data"}, r"^d\.f\.extract\.dest: '/data' is not allowed; use '\.' or a relative folder"),
        (EXTRACT | {"dest": "a/../b"}, r"^d\.f\.extract\.dest: 'a/\.\./b' is not allowed"),
        (EXTRACT | {"format": "rar"}, r"^d\.f\.extract\.format: 'rar' is not allowed; use one of auto, zip, tar, tar\.gz, tgz$"),
        (EXTRACT | {"strip_components": -1}, r"^d\.f\.extract\.strip_components: -1 is not allowed; use a number in \[0, 64\]$"),
        (EXTRACT | {"max_bytes": 0}, r"^d\.f\.extract\.max_bytes: 0 is not allowed"),
        (EXTRACT | {"max_members": 0}, r"^d\.f\.extract\.max_members: 0 is not allowed"),
        (EXTRACT | {"keep_archive": "yes"}, r"^d\.f\.extract\.keep_archive: 'yes' is not allowed; expected bool$"),
        (["a.json"], r"^d\.f\.extract: expected a mapping"),
    ],
)
def test_extract_entries_are_strict(extract, message):
    with pytest.raises(ConfigError, match=message) as err:
        download_specs({"f": {"url": "http://h/x.zip", "sha256": "0" * 64, "extract": extract}}, "d")
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_download_stage_extracts_a_clue_zip_into_the_prepare_layout(served, tnews, tmp_path):
    files, _ = tnews
    data = zip_bytes(official_members(tnews, ""))  # the official zips list their files at the top
    project = make_project(tmp_path / "project")
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["downloads"] = {"clue": {"tnews_public.zip": entry(served, "stage.zip", data, members=list(files), dest="tnews")}}
    params["clue"]["path"] = "data/downloads/clue"
    params_path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    env = project_env(project)

    proc = subprocess.run(["dvc", "repro", "download@clue"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Running stage 'download@clue'" in proc.stdout
    assert tree(project / "data/downloads/clue") == {f"tnews/{name}": content for name, content in files.items()}
    metrics = json.loads((project / "reports/download/clue.json").read_text())
    assert metrics == {"files": 1, "bytes": len(data), "extracted_files": 4, "extracted_bytes": sum(map(len, files.values()))}
    config = ClueParams.from_params(params["clue"])  # the files prepare_clue@tnews would read (running it doubles the time)
    found = split_paths(project / "data/downloads/clue/tnews", config.task("tnews"), config.layouts)
    assert {split: [p.name for p in paths] for split, paths in found.items()} == {"train": ["train.json"], "dev": ["dev.json"], "test": ["test.json"]}

    params["downloads"]["clue"]["tnews_public.zip"]["extract"]["members"].append("dev_few_all.json")
    params_path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    proc = subprocess.run(["dvc", "repro", "download@clue"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {served[0]}/stage.zip: selected member 'dev_few_all.json' is not in the archive (extract.members[4])"], proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert leftovers(project / "data" / "downloads") == [".gitignore"], "the failed stage left no output, staging folder or archive"
