"""The data translate.py trains on: the built-in numbers task, the user's own files, and Multi30k.

Everything here ends in sentence pairs, (source, target) strings; translate.py turns them into BPE pieces and batches.

    numbers_task(...)            German (or English) number words and their translation, generated here
    read_pairs(...)              a TSV of pairs, or two line-aligned files, as the user gives them
    fetch_multi30k(out, ...)     Multi30k task 1 (German-English image descriptions), downloaded from the public
                                 repository at a pinned commit, checked against SHA-256 sums written below

Every problem with the user's input raises UserError: translate.py prints it as one line and exits with status 2.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import http.client
import random
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path


class UserError(Exception):
    """Something about the user's input or run directory: one line on stderr, exit status 2."""


# -----------------------------------------------------------------------------
# The built-in task: German number words -> English number words, 0 to 999,999
# -----------------------------------------------------------------------------

UNITS_DE = ["", "ein", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"]
TEENS_DE = ["zehn", "elf", "zwölf", "dreizehn", "vierzehn", "fünfzehn", "sechzehn", "siebzehn", "achtzehn", "neunzehn"]
TENS_DE = ["", "", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig", "neunzig"]
UNITS_EN = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEENS_EN = [
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS_EN = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def german_below_1000(n: int, last: bool) -> str:
    """German writes units before tens ("zweiundvierzig"); a 1 is "eins" only when it ends the number."""
    hundreds, rest = divmod(n, 100)
    word = UNITS_DE[hundreds] + "hundert" if hundreds else ""
    tens, units = divmod(rest, 10)
    if tens == 1:
        return word + TEENS_DE[units]
    if tens == 0:
        return word + ("eins" if units == 1 and last else UNITS_DE[units])
    return word + (UNITS_DE[units] + "und" if units else "") + TENS_DE[tens]


def thousands_and_rest(n: int) -> tuple[int, int]:
    if not 0 <= n < 1_000_000:
        raise ValueError(f"the numbers task covers 0 to 999,999, got {n}")
    return divmod(n, 1000)


def german_number(n: int) -> str:
    """342 -> "dreihundertzweiundvierzig", 21007 -> "einundzwanzigtausendsieben": one word, as German writes it."""
    thousands, rest = thousands_and_rest(n)
    if n == 0:
        return "null"
    return (german_below_1000(thousands, last=False) + "tausend" if thousands else "") + german_below_1000(rest, True)


def english_below_1000(n: int) -> list[str]:
    hundreds, rest = divmod(n, 100)
    words = [UNITS_EN[hundreds], "hundred"] if hundreds else []
    tens, units = divmod(rest, 10)
    if tens == 1:
        return words + [TEENS_EN[units]]
    return words + [w for w in (TENS_EN[tens], UNITS_EN[units]) if w]


def english_number(n: int) -> str:
    """342 -> "three hundred forty two", 21007 -> "twenty one thousand seven" (no hyphens, no "and")."""
    thousands, rest = thousands_and_rest(n)
    if n == 0:
        return "zero"
    words = english_below_1000(thousands) + ["thousand"] if thousands else []
    return " ".join(words + english_below_1000(rest))


def numbers_task(
    n_train: int, n_valid: int, n_test: int, seed: int = 0, english_to_german: bool = False
) -> dict[str, list[tuple[str, str]]]:
    """Pairs (German, English), or (English, German), with as many 1-digit as 6-digit numbers. Which split a number
    falls in depends on the hash of its source alone, not on the seed, so a held-out number is never trained on."""
    rng = random.Random(seed)
    wanted = {"train": n_train, "valid": n_valid, "test": n_test}
    splits: dict[str, list[tuple[str, str]]] = {name: [] for name in wanted}
    seen: set[int] = set()
    while any(len(splits[name]) < wanted[name] for name in wanted) and len(seen) < 1_000_000:
        digits = rng.randint(1, 6)
        n = rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)
        if n in seen:
            continue
        seen.add(n)
        pair = (english_number(n), german_number(n)) if english_to_german else (german_number(n), english_number(n))
        name = split_of(pair[0])
        if len(splits[name]) < wanted[name]:
            splits[name].append(pair)
    return splits


def split_of(source: str) -> str:
    """A deterministic held-out split by the hash of the source sentence: 1% valid, 1% test, the rest train."""
    bucket = int.from_bytes(hashlib.sha256(source.encode("utf-8")).digest()[:8], "big") % 100
    return "valid" if bucket == 0 else "test" if bucket == 1 else "train"


# -----------------------------------------------------------------------------
# Reading the user's data: a TSV of pairs, or two line-aligned files
# -----------------------------------------------------------------------------


def read_lines(path: Path, may_be_empty: bool = False) -> list[str]:
    if path.is_dir():
        raise UserError(f"{path}: expected a file, found a folder")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # Excel and Notepad start UTF-8 files with a BOM
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not may_be_empty and not any(line.strip() for line in lines):
        raise UserError(f"{path}: the file is empty")
    text = []
    for number, line in enumerate(lines, 1):
        try:
            text.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as error:
            raise UserError(
                f"{path}:{number}: not UTF-8 (byte {line[error.start]:#04x} at column {error.start + 1})"
            ) from None
    return text


def read_tsv(path: Path, may_be_empty: bool = False) -> list[tuple[str, str]]:
    """source<TAB>target per line; further columns (Tatoeba's attribution) are ignored; blank lines skipped."""
    pairs = []
    for number, line in enumerate(read_lines(path, may_be_empty), 1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) < 2:
            raise UserError(f"{path}:{number}: expected source<TAB>target, found no tab")
        pairs.append((columns[0].strip(), columns[1].strip()))
    return pairs


def read_parallel(src: Path, tgt: Path) -> list[tuple[str, str]]:
    """Line i of src translates to line i of tgt. A tab inside a sentence becomes a space: a run keeps its splits as
    TSV files, where a tab would split the sentence into two columns on resume."""
    sources, targets = read_lines(src), read_lines(tgt)
    if len(sources) != len(targets):
        raise UserError(f"{src} has {len(sources)} lines but {tgt} has {len(targets)}: they must be line-aligned")
    pairs = zip(sources, targets, strict=True)
    return [(s.replace("\t", " ").strip(), t.replace("\t", " ").strip()) for s, t in pairs if s.strip() and t.strip()]


def check_data_flags(data: str | None, src: str | None, tgt: str | None, what: str) -> None:
    """--data FILE.tsv, or --src FILE --tgt FILE, or neither; anything else is refused in one line."""
    if data and (src or tgt):
        raise UserError(f"give {what} as --data FILE.tsv or as --src FILE --tgt FILE, not both")
    if bool(src) != bool(tgt):
        raise UserError(f"--src and --tgt come together (got only {'--src' if src else '--tgt'})")


def read_pairs(data: str | None, src: str | None, tgt: str | None, what: str) -> list[tuple[str, str]] | None:
    """--data FILE.tsv, or --src FILE --tgt FILE, or nothing (None)."""
    check_data_flags(data, src, tgt, what)
    if data:
        return read_tsv(Path(data))
    if src:
        return read_parallel(Path(src), Path(tgt))
    return None


def write_tsv(path: Path, pairs: list[tuple[str, str]]) -> None:
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")


# -----------------------------------------------------------------------------
# Multi30k task 1 (Elliott et al., 2016): 29,000 German-English image descriptions, the tutorials' data set
# -----------------------------------------------------------------------------

# The files of data/task1/raw/ in github.com/multi30k/dataset, at a commit rather than a branch, so what we check
# today is what anyone downloads later; the repository has not changed these files since 2018.
MULTI30K_COMMIT = "a3d2e0d26b56f3846f66a952536ffed4e401d05a"
MULTI30K_URL = f"https://raw.githubusercontent.com/multi30k/dataset/{MULTI30K_COMMIT}/data/task1/raw/"
MULTI30K_PAGE = f"https://github.com/multi30k/dataset/tree/{MULTI30K_COMMIT}/data/task1/raw"
# what we write (decompressed) <- the file in the repository, and the SHA-256 of that .gz file
MULTI30K_FILES = {
    "train.de": ("train.de.gz", "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6"),
    "train.en": ("train.en.gz", "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f"),
    "val.de": ("val.de.gz", "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a"),
    "val.en": ("val.en.gz", "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28"),
    "test2016.de": ("test_2016_flickr.de.gz", "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8"),
    "test2016.en": ("test_2016_flickr.en.gz", "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9"),
}


def by_hand(files: dict[str, tuple[str, str]]) -> str:
    names = ", ".join(remote for remote, _ in files.values())
    return f"fetch by hand: download {names} from {MULTI30K_PAGE} into a folder, then add --from FOLDER"


def read_source(source: str, name: str, timeout: float) -> bytes:
    """The bytes of one file from a folder or from a base URL (http, https, file)."""
    if "://" not in source:
        folder = Path(source)
        if not folder.is_dir():
            raise UserError(f"--from {source}: expected a folder or a URL, found neither")
        if not (folder / name).is_file():
            raise UserError(f"--from {source}: {name} is missing there")
        return (folder / name).read_bytes()
    url = source.rstrip("/") + "/" + name
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()  # a connection cut short raises IncompleteRead, not a short file
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", None) or error.__class__.__name__
        raise UserError(f"cannot download {url} ({reason})") from None


def fetch_multi30k(
    out: str | Path,
    source: str | None = None,
    files: dict[str, tuple[str, str]] = MULTI30K_FILES,
    timeout: float = 60.0,
) -> list[Path]:
    """Download (or copy from `source`, a folder or a mirror's base URL) the Multi30k files, check each against its
    pinned SHA-256, and write them decompressed into `out`. Nothing lands in `out` unless every file checked out:
    they are written into a temporary folder beside it first. Files already in `out` are kept, not fetched again."""
    out = Path(out)
    if all((out / local).is_file() for local in files):
        return [out / local for local in files]
    source = source or MULTI30K_URL
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for local, (remote, sha256) in files.items():
            try:
                data = read_source(source, remote, timeout)
            except UserError as error:
                raise UserError(f"{error}; {by_hand(files)}") from None
            digest = hashlib.sha256(data).hexdigest()
            if digest != sha256:
                raise UserError(
                    f"{remote}: SHA-256 {digest[:16]}... is not the pinned {sha256[:16]}... "
                    f"({len(data):,} bytes: cut short or altered?); {by_hand(files)}"
                )
            try:
                text = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as error:
                raise UserError(f"{remote}: not a complete gzip file ({error})") from None
            (staging / local).write_bytes(text)
        out.mkdir(exist_ok=True)
        for local in files:
            (staging / local).replace(out / local)  # a rename within one file system: all or nothing per file
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / local for local in files]
