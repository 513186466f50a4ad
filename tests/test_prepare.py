"""The data-preparation command, without network: files come from a loopback HTTP server, gdown is mocked."""

import hashlib
import io
import json
import os
import pickle
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from datasets import prepare
from datasets.prepare import (
    ChecksumError,
    DownloadError,
    Extract,
    Fetch,
    PrepareError,
    Recipe,
    Source,
    builders,
    check_dataset,
    download,
    drive_download,
    extract_archive,
    main,
    prepare_dataset,
    recipes,
    resolve_names,
)

# ------------------------------------------------------------------------------------------------ loopback server


class FileServer:
    """Serves ``files`` (path -> bytes) on 127.0.0.1 with Range support, and records the requests.

    Attributes:
        files: Served content by URL path.
        requests: ``(path, Range header or None)`` per request.
        sent: Body bytes sent in total.
        ignore_range: Answer Range requests with the whole file (200), like servers without Range support.
        cut_after: Send only this many body bytes of a response (announcing the full length), then close.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, object]] = []
        self.sent = 0
        self.ignore_range = False
        self.cut_after = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and not server.ignore_range:
                    start = int(re.match(r"bytes=(\d+)-", rng).group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    body = body[: server.cut_after]
                server.sent += len(body)  # before the write: the client may be done before this thread goes on
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    s = FileServer()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()
    s.thread.join()


@pytest.fixture
def fake_gdown(monkeypatch):
    """Replace ``gdown.download``: writes ``drive_files[id]`` to ``output`` and records the calls."""
    import gdown

    state = {"files": {}, "calls": []}

    def fake(url=None, output=None, quiet=False, id=None, resume=False, **kwargs):
        state["calls"].append(id)
        if id not in state["files"]:
            return None  # gdown reports some failures by returning None
        Path(output).write_bytes(state["files"][id])
        return output

    monkeypatch.setattr(gdown, "download", fake)
    return state


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


PAYLOAD = os.urandom(300_000)


# ------------------------------------------------------------------------------------------------ download


def test_download_writes_the_file_and_verifies_checksums(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    out = download(server.url("/a.bin"), tmp_path / "a.bin", md5=md5(PAYLOAD), sha256=sha, progress=False)
    assert out.read_bytes() == PAYLOAD
    assert not (tmp_path / "a.bin.part").exists()

    # A complete file is verified and kept: no new request.
    download(server.url("/a.bin"), tmp_path / "a.bin", md5=md5(PAYLOAD), progress=False)
    assert len(server.requests) == 1


def test_download_resumes_a_partial_file(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:100_000])
    download(server.url("/a.bin"), tmp_path / "a.bin", md5=md5(PAYLOAD), progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/a.bin", "bytes=100000-")]
    assert server.sent == len(PAYLOAD) - 100_000  # only the missing bytes travelled


def test_download_restarts_when_the_server_ignores_ranges(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.ignore_range = True
    (tmp_path / "a.bin.part").write_bytes(b"stale bytes from another file")
    download(server.url("/a.bin"), tmp_path / "a.bin", md5=md5(PAYLOAD), progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_interrupted_download_keeps_the_part_and_resumes(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.cut_after = 120_000
    with pytest.raises(DownloadError, match="run again to resume"):
        download(server.url("/a.bin"), tmp_path / "a.bin", progress=False)
    assert (tmp_path / "a.bin.part").read_bytes() == PAYLOAD[:120_000]
    assert not (tmp_path / "a.bin").exists()

    server.cut_after = None
    download(server.url("/a.bin"), tmp_path / "a.bin", md5=md5(PAYLOAD), progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/a.bin", "bytes=120000-")


def test_complete_part_answered_with_416_is_finished(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD)  # crashed between the last byte and the rename
    download(server.url("/a.bin"), tmp_path / "a.bin", md5=md5(PAYLOAD), progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/a.bin", f"bytes={len(PAYLOAD)}-")] and server.sent == 0


def test_checksum_mismatch_deletes_the_download(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    with pytest.raises(ChecksumError, match="md5 is .*, expected 0+"):
        download(server.url("/a.bin"), tmp_path / "a.bin", md5="0" * 32, progress=False)
    assert not (tmp_path / "a.bin").exists()
    assert not (tmp_path / "a.bin.part").exists()  # the next run downloads from scratch

    # An existing final file with a wrong checksum is the user's: reported, not deleted.
    (tmp_path / "b.bin").write_bytes(b"corrupt")
    with pytest.raises(ChecksumError, match="delete it"):
        download(server.url("/a.bin"), tmp_path / "b.bin", md5=md5(PAYLOAD), progress=False)
    assert (tmp_path / "b.bin").read_bytes() == b"corrupt"


def test_http_error_names_the_url(server, tmp_path):
    with pytest.raises(DownloadError, match=r"missing\.bin failed: HTTP 404"):
        download(server.url("/missing.bin"), tmp_path / "x.bin", progress=False)
    assert not (tmp_path / "x.bin").exists()


def test_drive_download_uses_gdown(fake_gdown, tmp_path):
    fake_gdown["files"]["ID1"] = b'{"train": []}'
    assert drive_download("ID1", tmp_path / "s.json").read_bytes() == b'{"train": []}'
    drive_download("ID1", tmp_path / "s.json")
    assert fake_gdown["calls"] == ["ID1"]  # an existing file is not downloaded again

    with pytest.raises(DownloadError) as e:
        drive_download("NOPE", tmp_path / "t.json")
    assert "https://drive.google.com/file/d/NOPE/view" in str(e.value)
    assert str(tmp_path / "t.json") in str(e.value)


# ------------------------------------------------------------------------------------------------ extraction


def test_extract_descends_into_the_top_folder(tmp_path):
    archive = tmp_path / "food-101.tar.gz"
    archive.write_bytes(tar_gz({"food-101/images/sushi/1.jpg": b"x", "food-101/meta/classes.txt": b"sushi"}))
    dest = tmp_path / "food-101"
    dest.mkdir()
    extract_archive(archive, dest, "images")
    assert (dest / "images" / "sushi" / "1.jpg").read_bytes() == b"x"
    assert (dest / "meta" / "classes.txt").is_file()
    assert sorted(p.name for p in dest.iterdir()) == ["images", "meta"]  # no temporary folder left


def test_extract_keeps_the_expected_top_folder_and_drops_macos_junk(tmp_path):
    archive = tmp_path / "EuroSAT.zip"
    archive.write_bytes(zip_bytes({"2750/Forest/Forest_1.jpg": b"f", "__MACOSX/2750/._Forest_1.jpg": b"junk"}))
    dest = tmp_path / "eurosat"
    dest.mkdir()
    extract_archive(archive, dest, "2750")
    assert (dest / "2750" / "Forest" / "Forest_1.jpg").is_file()
    assert not (dest / "__MACOSX").exists()


def test_extract_nested_archive_and_cleans_up_an_interrupted_run(tmp_path):
    inner = tar_gz({"101_ObjectCategories/accordion/image_0001.jpg": b"a"})
    archive = tmp_path / "caltech-101.zip"
    archive.write_bytes(zip_bytes({"caltech-101/101_ObjectCategories.tar.gz": inner, "caltech-101/show.m": b""}))
    dest = tmp_path / "caltech-101"
    (dest / ".extract-caltech-101.zip" / "half").mkdir(parents=True)  # left by a crash
    extract_archive(archive, dest, "101_ObjectCategories", nested="caltech-101/101_ObjectCategories.tar.gz")
    assert (dest / "101_ObjectCategories" / "accordion" / "image_0001.jpg").is_file()
    assert sorted(p.name for p in dest.iterdir()) == ["101_ObjectCategories"]


def test_extract_reports_an_unexpected_layout(tmp_path):
    archive = tmp_path / "x.tar.gz"
    archive.write_bytes(tar_gz({"other/a.txt": b"a", "b.txt": b"b"}))
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(PrepareError, match="does not contain 'images'"):
        extract_archive(archive, dest, "images")
    assert list(dest.iterdir()) == []  # nothing half-moved


def test_extract_refuses_paths_outside_the_folder(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(tar_gz({"../escaped.txt": b"x"}))
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises((PrepareError, tarfile.TarError)):
        extract_archive(archive, dest, "images")
    assert not (tmp_path / "escaped.txt").exists()


# ------------------------------------------------------------------------------------------------ recipes and CLI


def test_resolve_names():
    assert [r.name for r in resolve_names(["oxford_pets", "OxfordPets", "DTD", "cifar100"])] == [
        "OxfordPets",
        "DescribableTextures",
        "MYCIFAR100",
    ]
    assert len(resolve_names(["all"])) == len(prepare.RECIPES_LIST) == 17
    with pytest.raises(KeyError, match="unknown dataset 'imagenet-c'"):
        resolve_names(["imagenet-c"])


@pytest.mark.e2e
def test_unknown_name_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["nothing", "--root", "/tmp"])
    assert e.value.code == 2
    assert "unknown dataset 'nothing'" in capsys.readouterr().err


def test_known_checksums_are_well_formed():
    for recipe in prepare.RECIPES_LIST:
        for step in recipe.steps:
            source = getattr(step, "source", None)
            if source is not None:
                assert source.url or source.drive_id
                assert source.md5 is None or re.fullmatch(r"[0-9a-f]{32}", source.md5)
                assert source.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", source.sha256)


def local_dtd_recipe(server, with_md5=True) -> Recipe:
    """DTD's recipe with its archive served locally (the split file still comes through the mocked gdown)."""
    archive = tar_gz({"dtd/images/banded/banded_0001.jpg": image_bytes("JPEG"),
                      "dtd/images/dotted/dotted_0001.jpg": image_bytes("JPEG")})  # fmt: skip
    server.files["/dtd-r1.0.1.tar.gz"] = archive
    real = prepare.RECIPES["DescribableTextures"]
    source = Source("dtd-r1.0.1.tar.gz", url=server.url("/dtd-r1.0.1.tar.gz"), md5=md5(archive) if with_md5 else None)
    return Recipe(**{**real.__dict__, "steps": (Extract(source, creates="images"), *real.steps[1:])})


DTD_SPLIT = {
    "train": [["banded/banded_0001.jpg", 0, "banded"]],
    "val": [],
    "test": [["dotted/dotted_0001.jpg", 1, "dotted"]],
}


@pytest.mark.e2e
def test_prepare_end_to_end(server, fake_gdown, tmp_path, monkeypatch, capsys):
    recipe = local_dtd_recipe(server)
    monkeypatch.setattr(recipes, "RECIPES_LIST", (recipe,))
    split_id = prepare.RECIPES["DescribableTextures"].steps[-1].source.drive_id
    fake_gdown["files"][split_id] = json.dumps(DTD_SPLIT).encode()

    assert main(["dtd", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"[ok] DescribableTextures: {tmp_path / 'dtd'}" in out
    assert (tmp_path / "dtd" / "images" / "banded" / "banded_0001.jpg").is_file()
    assert json.loads((tmp_path / "dtd" / "split_zhou_DescribableTextures.json").read_text()) == DTD_SPLIT
    assert not (tmp_path / "downloads" / "dtd-r1.0.1.tar.gz").exists()  # archives are removed by default

    # Running again does nothing: every step's output is there.
    assert main(["dtd", "--root", str(tmp_path)]) == 0
    assert len(server.requests) == 1 and fake_gdown["calls"] == [split_id]
    assert main(["dtd", "--root", str(tmp_path), "--check"]) == 0


def test_prepare_keeps_archives_on_request(server, fake_gdown, tmp_path):
    recipe = local_dtd_recipe(server, with_md5=False)
    fake_gdown["files"][recipe.steps[-1].source.drive_id] = json.dumps(DTD_SPLIT).encode()
    assert prepare_dataset(recipe, tmp_path, keep_archives=True) == []
    assert (tmp_path / "downloads" / "dtd-r1.0.1.tar.gz").is_file()


@pytest.mark.e2e
def test_prepare_reports_a_failed_download(server, fake_gdown, tmp_path, monkeypatch, capsys):
    recipe = local_dtd_recipe(server)
    bad = Source("dtd-r1.0.1.tar.gz", url=recipe.steps[0].source.url, md5="f" * 32)
    monkeypatch.setattr(recipes, "RECIPES_LIST", (Recipe(**{**recipe.__dict__, "steps": (Extract(bad, "images"),)}),))
    assert main(["dtd", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "ChecksumError" in out and "expected ffff" in out


@pytest.mark.e2e
def test_check_prints_what_is_missing(tmp_path, capsys):
    dtd = tmp_path / "dtd"
    (dtd / "images" / "banded").mkdir(parents=True)
    (dtd / "images" / "banded" / "banded_0001.jpg").write_bytes(b"1")
    split = {**DTD_SPLIT, "val": [["banded/banded_0002.jpg", 0, "banded"], ["banded/banded_0003.jpg", 0, "banded"]]}
    (dtd / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))

    assert main(["dtd", "oxford_pets", "--root", str(tmp_path), "--check"]) == 1
    out = capsys.readouterr().out
    assert "[incomplete] DescribableTextures:" in out
    assert "3 of 4 images listed in split_zhou_DescribableTextures.json are missing" in out
    assert str(dtd / "images" / "dotted" / "dotted_0001.jpg") in out
    assert f"missing folder {tmp_path / 'oxford_pets'}" in out
    assert f"python -m datasets.prepare OxfordPets --root {tmp_path}" in out
    assert not (tmp_path / "oxford_pets").exists()  # --check creates nothing

    (dtd / "split_zhou_DescribableTextures.json").write_text("{broken")
    assert any("is malformed" in p for p in check_dataset(prepare.RECIPES["DescribableTextures"], tmp_path))


def test_check_counts_class_folders(tmp_path):
    for i in range(3):
        (tmp_path / "imagenet-rendition" / "imagenet-r" / f"n{i:08d}").mkdir(parents=True)
    (tmp_path / "imagenet-rendition" / "classnames.txt").write_text("n00000000 a\n")
    problems = check_dataset(prepare.RECIPES["ImageNetR"], tmp_path)
    assert problems == [f"{tmp_path / 'imagenet-rendition' / 'imagenet-r'} has 3 class folders, expected 200"]


def image_bytes(fmt, color=(200, 30, 30), size=(32, 24)):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.e2e
def test_decode_lists_every_image_that_does_not_decode(tmp_path, capsys):
    dtd = tmp_path / "dtd"
    good = {
        "banded/a.jpg": image_bytes("JPEG"),
        "banded/b.png": image_bytes("PNG"),
        "dotted/c.jpg": image_bytes("JPEG"),
    }
    jpeg = image_bytes("JPEG", size=(64, 64))
    bad = {
        "dotted/truncated.jpg": jpeg[: len(jpeg) // 2],  # a download cut short: the header is intact
        "dotted/garbage.png": b"\x89PNG\r\n\x1a\n" + b"not a png" * 10,
    }
    for rel, data in {**good, **bad}.items():
        (dtd / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        (dtd / "images" / rel).write_bytes(data)
    (dtd / "images" / "dotted" / "unlisted.jpg").write_bytes(b"junk")  # in no split: not the dataset's concern
    split = {
        "train": [["banded/a.jpg", 0, "banded"], ["dotted/truncated.jpg", 1, "dotted"]],
        "val": [["banded/b.png", 0, "banded"]],
        "test": [["dotted/c.jpg", 1, "dotted"], ["dotted/garbage.png", 1, "dotted"], ["banded/a.jpg", 0, "banded"]],
    }
    (dtd / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))

    assert main(["dtd", "--root", str(tmp_path), "--check"]) == 1  # every file exists, two are damaged
    out = capsys.readouterr().out
    assert "2 of 5 images are damaged" in out and "--check --decode" in out
    capsys.readouterr()
    assert main(["dtd", "--root", str(tmp_path), "--check", "--decode", "--workers", "2"]) == 1
    captured = capsys.readouterr()
    out = captured.out
    assert "[incomplete] DescribableTextures:" in out
    assert "2 of 5 images cannot be decoded" in out
    lines = {line.strip() for line in out.splitlines()}
    assert any(line.startswith(f"- {dtd / 'images' / 'dotted' / 'truncated.jpg'}: OSError: ") for line in lines)
    assert any(line.startswith(f"- {dtd / 'images' / 'dotted' / 'garbage.png'}: ") for line in lines)
    assert not any(name in out for name in ("a.jpg", "b.png", "c.jpg", "unlisted.jpg"))
    assert "decoding" in captured.err  # the progress bar

    for rel in bad:
        (dtd / "images" / rel).write_bytes(image_bytes("PNG"))
    assert main(["dtd", "--root", str(tmp_path), "--check", "--decode"]) == 0


@pytest.mark.e2e
def test_check_finds_images_that_are_empty_or_cut_short(tmp_path, capsys):
    """``--check`` without ``--decode``: every listed file's end is read; only the doubtful files are decoded."""
    dtd = tmp_path / "dtd"
    jpeg, png = image_bytes("JPEG", size=(64, 64)), image_bytes("PNG", size=(64, 64))
    good = {
        "a/plain.jpg": jpeg,
        "a/padded.jpg": jpeg + b"\x00" * 100,  # padding after the end marker: decodes, not reported
        "a/trailing.jpg": jpeg + b"thumbnail junk" * 20,  # doubtful (no end marker at the end), decodes fine
        "a/image.png": image_bytes("PNG"),
        "a/image.gif": image_bytes("GIF"),
        "a/image.bmp": image_bytes("BMP"),
        "a/image.webp": image_bytes("WEBP"),
        "a/png_named.jpg": image_bytes("PNG"),  # the format is read from the file, not its name
    }
    bad = {
        "b/truncated.jpg": jpeg[: len(jpeg) * 3 // 4],
        "b/empty.jpg": b"",
        "b/text.jpg": b"<html>404 Not Found</html>",
        "b/cut.png": png[: len(png) // 2],
        "b/cut.gif": image_bytes("GIF")[:-10],
        "b/cut.bmp": image_bytes("BMP")[:-10],
        "b/cut.webp": image_bytes("WEBP")[:-10],
    }
    for rel, data in {**good, **bad}.items():
        (dtd / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        (dtd / "images" / rel).write_bytes(data)
    entries = [[rel, 0, rel.split("/")[0]] for rel in {**good, **bad}]
    split = {"train": entries[:5], "val": entries[5:8], "test": entries[8:]}
    (dtd / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    for rel in bad:
        assert not prepare.looks_complete(dtd / "images" / rel), rel
    assert main(["dtd", "--root", str(tmp_path), "--check"]) == 1
    out = capsys.readouterr().out
    assert (
        "[incomplete] DescribableTextures:" in out and f"{len(bad)} of {len(good) + len(bad)} images are damaged" in out
    )
    reported = {line.strip()[2:].split(": ")[0] for line in out.splitlines() if line.strip().startswith(f"- {dtd}")}
    assert reported == {str(dtd / "images" / rel) for rel in bad}
    assert f"python -m datasets.prepare DescribableTextures --root {tmp_path} --check --decode" in out
    for rel in bad:
        (dtd / "images" / rel).write_bytes(jpeg)
    assert main(["dtd", "--root", str(tmp_path), "--check"]) == 0
    out = capsys.readouterr().out
    assert f"[ok] DescribableTextures: {dtd} (" in out and "pixels not decoded: add --decode" in out


def test_referenced_images_of_list_and_folder_datasets(tmp_path):
    aircraft = tmp_path / "fgvc_aircraft"
    (aircraft / "images").mkdir(parents=True)
    for i in ("0001", "0002", "0003"):
        (aircraft / "images" / f"{i}.jpg").write_bytes(image_bytes("JPEG"))
    (aircraft / "images_variant_train.txt").write_text("0001 707-320\n0002 A300B4\n")
    (aircraft / "images_variant_val.txt").write_text("0003 707-320\n")
    (aircraft / "images_variant_test.txt").write_text("0002 A300B4\n0009 A300B4\n")  # 0009 is missing
    assert prepare.referenced_images(prepare.RECIPES["FGVCAircraft"], tmp_path) == [
        aircraft / "images" / f"{i}.jpg" for i in ("0001", "0002", "0003")
    ]
    (aircraft / "images" / "0003.jpg").write_bytes(b"\xff\xd8\xff")
    problems = prepare.decode_problems(prepare.RECIPES["FGVCAircraft"], tmp_path)
    assert problems[0] == "1 of 3 images cannot be decoded (repair or replace them):"
    assert [p.split(": ")[0] for p in problems[1:]] == [str(aircraft / "images" / "0003.jpg")]

    sketch = tmp_path / "imagenet-sketch" / "images"
    for wnid in ("n01", "n02"):
        (sketch / wnid).mkdir(parents=True)
        (sketch / wnid / "x.JPEG").write_bytes(image_bytes("JPEG"))
    (sketch / "README.txt").write_text("not a class folder")
    assert prepare.referenced_images(prepare.RECIPES["ImageNetSketch"], tmp_path) == [
        sketch / "n01" / "x.JPEG",
        sketch / "n02" / "x.JPEG",
    ]


@pytest.mark.e2e
def test_imagenet_explains_what_to_place_by_hand(fake_gdown, tmp_path, capsys):
    fake_gdown["files"]["1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF"] = b"n01440764 tench\n"
    assert main(["imagenet", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert (tmp_path / "imagenet" / "classnames.txt").read_bytes() == b"n01440764 tench\n"
    assert f"missing {tmp_path / 'imagenet' / 'images' / 'train'}" in out
    assert "image-net.org" in out and f"{tmp_path / 'imagenet'}/images/val/<wnid>/*.JPEG" in out


def test_imagenet_variants_copy_classnames_from_imagenet(fake_gdown, tmp_path):
    (tmp_path / "imagenet").mkdir()
    (tmp_path / "imagenet" / "classnames.txt").write_text("n01440764 tench\n")
    recipe = prepare.RECIPES["ImageNetSketch"]  # manual images, classnames.txt automatic
    problems = prepare_dataset(recipe, tmp_path)
    assert (tmp_path / "imagenet-sketch" / "classnames.txt").read_text() == "n01440764 tench\n"
    assert fake_gdown["calls"] == []
    assert problems == [f"missing {tmp_path / 'imagenet-sketch' / 'images'}"]


def test_cifar100_is_written_as_image_folders(server, tmp_path, monkeypatch):
    names = ["apple", "aquarium_fish"]
    rng = np.random.default_rng(0)

    def batch(n):
        return pickle.dumps(
            {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": [i % 2 for i in range(n)]}
        )

    archive = tar_gz(
        {
            "cifar-100-python/meta": pickle.dumps({"fine_label_names": names}),
            "cifar-100-python/train": batch(4),
            "cifar-100-python/test": batch(2),
        }
    )
    server.files["/cifar.tar.gz"] = archive
    monkeypatch.setattr(
        builders,
        "CIFAR100_SOURCE",
        Source("cifar-100-python.tar.gz", url=server.url("/cifar.tar.gz"), md5=md5(archive)),
    )
    problems = prepare_dataset(prepare.RECIPES["MYCIFAR100"], tmp_path)
    folder = tmp_path / "cifar100"
    assert sorted(p.name for p in (folder / "images" / "train" / "aquarium_fish").iterdir()) == [
        "00001.png",
        "00003.png",
    ]
    assert len(list((folder / "images" / "test").rglob("*.png"))) == 2
    assert (folder / "classnames_for_cifar100.txt").read_text() == "apple apple\naquarium_fish aquarium fish\n"
    assert problems == [
        f"{folder / 'images' / 'train'} has 2 class folders, expected 100",
        f"{folder / 'images' / 'test'} has 2 class folders, expected 100",
    ]


class RunsCode:
    def __init__(self, *call):
        self.call = call

    def __reduce__(self):
        return self.call[0], self.call[1:]


def test_cifar100_batches_that_run_code_are_refused(server, tmp_path, monkeypatch):
    marker = tmp_path / "code-ran"
    archive = tar_gz(
        {
            "cifar-100-python/meta": pickle.dumps({"fine_label_names": RunsCode(os.system, f"touch {marker}")}),
            "cifar-100-python/train": b"",
            "cifar-100-python/test": b"",
        }
    )
    server.files["/cifar.tar.gz"] = archive
    monkeypatch.setattr(
        builders,
        "CIFAR100_SOURCE",
        Source("cifar-100-python.tar.gz", url=server.url("/cifar.tar.gz"), md5=md5(archive)),
    )
    with pytest.raises(pickle.UnpicklingError, match=r"meta asks to run \w+\.system") as e:
        prepare_dataset(prepare.RECIPES["MYCIFAR100"], tmp_path)
    assert not marker.exists()
    assert f"Delete {tmp_path / 'downloads' / 'cifar-100-python.tar.gz'}" in str(e.value)


@pytest.mark.e2e
def test_synthetic_is_generated(tmp_path, capsys):
    assert main(["synthetic", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "synthetic_shapes" / "split_zhou_SyntheticShapes.json").is_file()
    assert main(["SyntheticShapes", "--root", str(tmp_path), "--check"]) == 0


def test_fetch_step_and_recipe_types():
    # Every recipe lists what its dataset class needs, and every step is one of the three kinds.
    for recipe in prepare.RECIPES_LIST:
        assert recipe.required
        assert all(isinstance(s, (Fetch, Extract, prepare.Build)) for s in recipe.steps)
        if recipe.split_file:
            assert recipe.split_file in recipe.required
