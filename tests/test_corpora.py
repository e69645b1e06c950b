"""corpora.py: reading the user's files (a byte-order mark is dropped), and fetching Multi30k without rot: each file
checked against its pinned SHA-256, nothing half-written on failure, one line and exit 2 offline or on a bad file.
No test touches the network: a local http.server on 127.0.0.1 serves small files the test makes."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

import translate as tr
from translation import corpora

TEXTS = {"train.de": "Ein Hund läuft.\nZwei Katzen.\n", "train.en": "A dog runs.\nTwo cats.\n"}


def gz(text: str) -> bytes:
    return gzip.compress(text.encode("utf-8"), mtime=0)


def small_files(where: Path) -> dict[str, tuple[str, str]]:
    """Two small .gz files in `where`, and the table fetch_multi30k checks them against."""
    where.mkdir(parents=True, exist_ok=True)
    files = {}
    for local, text in TEXTS.items():
        (where / f"{local}.gz").write_bytes(gz(text))
        files[local] = (f"{local}.gz", hashlib.sha256(gz(text)).hexdigest())
    return files


class Server:
    """Serves a folder on 127.0.0.1; a file named in `cut_short` is sent with a Content-Length it does not keep."""

    def __init__(self, folder: Path):
        self.cut_short: set[str] = set()
        cut_short = self.cut_short

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                if name in cut_short:
                    data = (folder / name).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])  # then the connection closes
                    self.close_connection = True
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "mirror"
    files = small_files(folder)
    server = Server(folder)
    yield server, folder, files
    server.close()


def left_behind(where: Path) -> list[str]:
    return sorted(p.name for p in where.iterdir() if p.name.startswith("."))


def test_a_byte_order_mark_is_dropped_from_tsv_and_line_files(tmp_path):
    bom = b"\xef\xbb\xbf"
    (tmp_path / "pairs.tsv").write_bytes(bom + b"Katze\tcat\nHund\tdog\n")
    (tmp_path / "a.de").write_bytes(bom + b"Katze\n")
    (tmp_path / "a.en").write_bytes(bom + b"cat\n")
    assert corpora.read_tsv(tmp_path / "pairs.tsv") == [("Katze", "cat"), ("Hund", "dog")], "the BOM stayed"
    assert corpora.read_parallel(tmp_path / "a.de", tmp_path / "a.en") == [("Katze", "cat")], "the BOM stayed"
    # only a leading BOM is a BOM: the same character inside a line is text and stays
    (tmp_path / "inner.tsv").write_bytes("a\ufeffb\tc\n".encode())
    assert corpora.read_tsv(tmp_path / "inner.tsv") == [("a\ufeffb", "c")]


def test_a_byte_order_mark_never_reaches_the_vocabulary(tmp_path):
    (tmp_path / "pairs.tsv").write_bytes(b"\xef\xbb\xbf" + "".join(f"katze {i}\tcat {i}\n" for i in range(40)).encode())
    pairs = corpora.read_tsv(tmp_path / "pairs.tsv")
    tokenizer = tr.train_tokenizer([t for pair in pairs for t in pair], 60)
    assert not [piece for piece in tokenizer.get_vocab() if "\ufeff" in piece], "a BOM became BPE pieces"


def test_fetch_downloads_checks_and_unpacks(tmp_path, served):
    server, _, files = served
    out = tmp_path / "data" / "m30k"
    paths = corpora.fetch_multi30k(out, server.url, files=files)
    assert {p.name: p.read_text(encoding="utf-8") for p in paths} == TEXTS
    assert left_behind(out.parent) == [], "a temporary folder was left behind"
    # a second fetch finds the files and downloads nothing (the server is gone)
    server.close()
    assert corpora.fetch_multi30k(out, server.url, files=files) == paths


def test_fetch_from_a_local_folder(tmp_path):
    files = small_files(tmp_path / "copy")
    paths = corpora.fetch_multi30k(tmp_path / "out", str(tmp_path / "copy"), files=files)
    assert [p.read_text(encoding="utf-8") for p in paths] == list(TEXTS.values())


@pytest.mark.parametrize("what", ["corrupt", "cut-short"])
def test_a_bad_download_is_refused_and_leaves_nothing(tmp_path, served, what):
    server, folder, files = served
    if what == "corrupt":
        data = bytearray((folder / "train.de.gz").read_bytes())
        data[20] ^= 0xFF
        (folder / "train.de.gz").write_bytes(bytes(data))
        words = "train.de.gz: SHA-256"
    else:  # the server promises train.en.gz's length and closes halfway
        server.cut_short.add("train.en.gz")
        words = "cannot download"
    out = tmp_path / "out"
    with pytest.raises(corpora.UserError, match=words) as error:
        corpora.fetch_multi30k(out, server.url, files=files)
    assert "fetch by hand" in str(error.value)
    assert not out.exists(), "a failed fetch wrote into the data folder"
    assert left_behind(tmp_path) == [], "a temporary folder was left behind"


def test_a_gzip_that_checks_out_but_does_not_unpack_is_refused(tmp_path):
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "x.gz").write_bytes(b"not gzip at all")
    files = {"x": ("x.gz", hashlib.sha256(b"not gzip at all").hexdigest())}
    with pytest.raises(corpora.UserError, match="x.gz: not a complete gzip file"):
        corpora.fetch_multi30k(tmp_path / "out", str(tmp_path / "copy"), files=files)
    assert not (tmp_path / "out").exists()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize("where", ["offline", "wrong-files", "no-such-folder", "missing-file"])
def test_fetch_on_the_command_line_fails_in_one_line_with_exit_2(tmp_path, served, capsys, where):
    server, folder, _ = served
    (tmp_path / "empty").mkdir()
    source, words = {
        "offline": (f"http://127.0.0.1:{closed_port()}/", "cannot download"),
        # the mirror holds files under Multi30k's names whose bytes are not Multi30k's: the pinned sums refuse them
        "wrong-files": (server.url, "SHA-256"),
        "no-such-folder": (str(tmp_path / "nowhere"), "expected a folder or a URL"),
        "missing-file": (str(tmp_path / "empty"), "train.de.gz is missing there"),
    }[where]
    if where == "wrong-files":
        for remote, _ in corpora.MULTI30K_FILES.values():
            (folder / remote).write_bytes(gz("Ein Hund.\n"))
    out = tmp_path / "data" / "multi30k"
    assert tr.main(["fetch", "multi30k", "--out", str(out), "--from", source]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err, f"expected one line with {words!r}, got {err!r}"
    assert not out.exists(), "a failed fetch wrote into the data folder"


def test_the_pinned_source_is_a_commit_and_every_file_has_a_sha256():
    assert len(corpora.MULTI30K_COMMIT) == 40 and corpora.MULTI30K_COMMIT in corpora.MULTI30K_URL
    assert len(corpora.MULTI30K_FILES) == 6
    assert all(len(sha) == 64 and int(sha, 16) >= 0 for _, sha in corpora.MULTI30K_FILES.values())
