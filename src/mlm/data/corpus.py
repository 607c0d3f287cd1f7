"""Reading a text corpus: files, directories, globs, `.gz` files and `gs://` prefixes, streamed.

A corpus is read as a stream of *units*: one per non-empty line (`layout="lines"`, one sentence
per line, the seed README's format) or one per block of lines separated by blank lines
(`layout="documents"`). Nothing holds more than one unit in memory, so memory stays flat as the
corpus grows. The same module decides the train/validation split (`is_validation`), by a hash of
each unit, so the split does not depend on file order or on how the corpus is cut into files.
`preprocess_wiki_dump` writes a cleaned, length-filtered copy of a corpus.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence

from mlm import storage
from mlm.data.cleaning import clean_text
from mlm.errors import UserInputError
from mlm.progress import ProgressMeter, byte_unit

LAYOUTS = ("lines", "documents")
DEFAULT_VALIDATION_FRACTION = 0.05
_GLOB_CHARS = set("*?[")


@dataclasses.dataclass
class CorpusStats:
    """Counts gathered while a corpus is read (filled in as the stream is consumed)."""

    files: int = 0
    bytes: int = 0
    lines: int = 0
    units: int = 0
    filtered_units: int = 0
    invalid_utf8_lines: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def is_validation(text: str, validation_fraction: float) -> bool:
    """Whether a unit of text belongs to the validation split (stable hash of its content)."""
    if validation_fraction <= 0:
        return False
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < validation_fraction * 2**64


def in_sample(text: str, fraction: float) -> bool:
    """Whether a unit of text belongs to a reproducible sample of about `fraction` of the units
    (a stable hash of its content, independent of the validation split's)."""
    if fraction >= 1:
        return True
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=b"mlm-sample").digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


def corpus_bytes(corpus: str | Sequence[str]) -> int:
    """The stored size of a corpus's files (compressed files count as stored)."""
    return sum(file_size(uri) for uri in resolve_corpus(corpus))


def batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """Lists of `size` consecutive items (the last one shorter) from a stream."""
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _list_directory(uri: str) -> list[str]:
    """Files below a local directory or `gs://` prefix (hidden names skipped)."""
    if storage.is_remote(uri):
        files = []
        for child in storage.glob(storage.join(uri, "*")):
            if os.path.basename(child).startswith("."):
                continue
            # GCS has no directories: a name with objects below it is a prefix.
            files.extend(_list_directory(child) if _is_gcs_prefix(child) else [child])
        return files
    files = []
    for dirpath, dirnames, filenames in os.walk(uri):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        files.extend(os.path.join(dirpath, f) for f in filenames if not f.startswith("."))
    return files


def _is_gcs_prefix(uri: str) -> bool:
    return bool(storage.glob(storage.join(uri, "*")))


def _is_directory(uri: str) -> bool:
    return _is_gcs_prefix(uri) if storage.is_remote(uri) else os.path.isdir(uri)


def resolve_corpus(corpus: str | Sequence[str]) -> list[str]:
    """The sorted list of files a corpus specification names.

    Args:
        corpus: a path or `gs://` URI, or a list of them; each may be a file (optionally `.gz`),
            a directory / prefix (all files below it, hidden ones skipped) or a glob pattern.

    Returns:
        Sorted, de-duplicated file URIs.

    Raises:
        UserInputError: when an entry matches nothing or the corpus has no files.
    """
    entries = [corpus] if isinstance(corpus, str) else list(corpus)
    if not entries:
        raise UserInputError(
            "corpus: no path given; pass a file, directory, glob or gs:// / s3:// prefix"
        )
    files: set[str] = set()
    for entry in entries:
        if _GLOB_CHARS & set(entry):
            matched = []
            for path in storage.glob(entry):
                matched.extend(_list_directory(path) if _is_directory(path) else [path])
        elif _is_directory(entry):
            matched = _list_directory(entry)
        else:
            matched = [entry] if storage.exists(entry) else []
        if not matched:
            raise UserInputError(
                f"corpus: {entry!r} matches no file; pass an existing text file, directory, glob "
                "or gs:// / s3:// prefix"
            )
        files.update(matched)
    return sorted(files)


def file_size(uri: str) -> int:
    """The size in bytes of a local file or stored object (as stored: compressed for `.gz`)."""
    if not storage.is_remote(uri):
        return os.path.getsize(uri)
    with storage.open_read(uri, "rb") as raw:
        return raw.seek(0, io.SEEK_END)


def _raw_lines(uri: str, position: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """The lines of a file, decompressed; `position` hears how many stored bytes are read."""
    with storage.open_read(uri, "rb") as raw:
        compressed = uri.endswith(".gz")
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        read = 0
        try:
            for number, line in enumerate(stream):
                if position is not None:
                    if not compressed:
                        read += len(line)
                    elif number % 256 == 0:  # tell() is a system call: not on every line
                        read = raw.tell()
                    position(read)
                yield line
        except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
            raise UserInputError(f"corpus file {uri}: cannot decompress ({error})") from error


def _decoded_lines(
    uri: str, strict_utf8: bool, stats: CorpusStats, position: Callable[[int], None] | None
) -> Iterator[str]:
    for number, line in enumerate(_raw_lines(uri, position), start=1):
        stats.bytes += len(line)
        stats.lines += 1
        if b"\x00" in line:
            raise UserInputError(
                f"corpus file {uri}: line {number} contains NUL bytes, so this looks like a binary "
                "file; pass only text files (UTF-8, optionally .gz)"
            )
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as error:
            if strict_utf8:
                raise UserInputError(
                    f"corpus file {uri}: line {number} is not valid UTF-8 ({error.reason} at byte "
                    f"{error.start}); re-encode the file as UTF-8 or drop strict_utf8 to replace "
                    "bad bytes"
                ) from error
            stats.invalid_utf8_lines += 1
            yield line.decode("utf-8", errors="replace")


def _file_units(
    uri: str,
    layout: str,
    strict_utf8: bool,
    stats: CorpusStats,
    position: Callable[[int], None] | None = None,
) -> Iterator[str]:
    document: list[str] = []
    for line in _decoded_lines(uri, strict_utf8, stats, position):
        text = line.strip()
        if layout == "lines":
            if text:
                yield text
        elif text:
            document.append(text)
        elif document:
            yield "\n".join(document)
            document = []
    if document:
        yield "\n".join(document)


def read_units(
    corpus: str | Sequence[str],
    *,
    layout: str = "lines",
    strict_utf8: bool = False,
    clean: bool = False,
    min_words: int = 1,
    max_words: int | None = None,
    stats: CorpusStats | None = None,
    progress: str | None = None,
) -> Iterator[str]:
    """Stream the units (lines or documents) of a corpus, in sorted file order.

    Args:
        corpus: see `resolve_corpus`.
        layout: "lines" (one unit per non-empty line) or "documents" (blank-line separated).
        strict_utf8: fail on invalid UTF-8 instead of replacing bad bytes (and counting them in
            `stats.invalid_utf8_lines`).
        clean: remove HTML/wiki markup from each unit (`cleaning.clean_text`) before filtering.
        min_words: skip units with fewer whitespace-separated words.
        max_words: skip units with more words (None: no limit).
        stats: a `CorpusStats` to fill in while reading.
        progress: print progress lines with an ETA to stderr while the corpus is read, labelled
            with this (e.g. the step's name); None prints nothing.

    Raises:
        UserInputError: for missing, empty, binary or (with strict_utf8) non-UTF-8 input, and
            when no unit passes the length filter (raised when the stream ends).
    """
    files = resolve_corpus(corpus)  # now, so a bad path fails before any work starts
    by_file = read_units_by_file(
        files,
        layout=layout,
        strict_utf8=strict_utf8,
        clean=clean,
        min_words=min_words,
        max_words=max_words,
        stats=stats,
        progress=progress,
    )
    return (unit for units in by_file for unit in units)


def read_units_by_file(
    files: Sequence[str],
    *,
    layout: str = "lines",
    strict_utf8: bool = False,
    clean: bool = False,
    min_words: int = 1,
    max_words: int | None = None,
    stats: CorpusStats | None = None,
    progress: str | None = None,
    require_text: bool = True,
) -> Iterator[Iterator[str]]:
    """The units of each of `files` (resolved URIs, see `resolve_corpus`), file by file.

    Takes the arguments of `read_units`; each file's iterator is drained before the next file
    is opened, whether or not the caller read it to the end. `require_text=False` accepts files
    that hold no unit at all (one partition of a corpus may have none).
    """
    if layout not in LAYOUTS:
        raise UserInputError(f"layout: {layout!r} is not one of {', '.join(LAYOUTS)}")
    if min_words < 1 or (max_words is not None and max_words < min_words):
        raise UserInputError(
            f"min_words/max_words: need 1 <= min_words <= max_words, got {min_words}/{max_words}"
        )
    stats = stats if stats is not None else CorpusStats()
    reading = _ReadingProgress(list(files), progress) if progress else None
    filters = _UnitFilter(layout, strict_utf8, clean, min_words, max_words, stats)
    return _units_by_file(list(files), filters, reading, require_text)


def partition_files(files: Sequence[str], partitions: int) -> list[list[str]]:
    """Splits a corpus's files into `partitions` groups of about equal stored size.

    A file is never split, so there are at most as many groups as files. Largest file first,
    each to the group with the fewest bytes so far (ties: the lower number); each group is
    sorted. The result depends only on the files' names and sizes, so every process or pod that
    computes it gets the same groups.
    """
    if partitions < 1:
        raise UserInputError(f"partitions={partitions}: need at least 1")
    count = min(partitions, len(files))
    groups: list[list[str]] = [[] for _ in range(count)]
    loads = [0] * count
    for size, uri in sorted(((file_size(uri), uri) for uri in files), key=lambda f: (-f[0], f[1])):
        lightest = loads.index(min(loads))
        groups[lightest].append(uri)
        loads[lightest] += size
    return [sorted(group) for group in groups]


class _ReadingProgress:
    """Progress over the stored bytes of a corpus: `<label>: read 3/12 MiB (25%) | eta 0:01:10`."""

    def __init__(self, files: list[str], label: str) -> None:
        self.sizes = [file_size(uri) for uri in files]
        unit, scale = byte_unit(sum(self.sizes))
        self.meter = ProgressMeter(sum(self.sizes), label=f"{label}: read", unit=unit, scale=scale)
        self.before = 0  # stored bytes of the files already read

    def position(self, read: int) -> None:
        """`read` bytes of the current file are read."""
        self.meter.update(self.before + read)

    def file_done(self, index: int) -> None:
        self.before += self.sizes[index]
        self.meter.update(self.before)


# The longest line or document read; longer is text without line breaks (see `_units`).
MAX_UNIT_CHARACTERS = 4_000_000


@dataclasses.dataclass
class _UnitFilter:
    """How a file's lines become the units kept (`read_units`'s arguments)."""

    layout: str
    strict_utf8: bool
    clean: bool
    min_words: int
    max_words: int | None
    stats: CorpusStats

    def units(self, uri: str, position: Callable[[int], None] | None) -> Iterator[str]:
        stats = self.stats
        stats.files += 1
        for unit in _file_units(uri, self.layout, self.strict_utf8, stats, position):
            if len(unit) > MAX_UNIT_CHARACTERS:
                # Tokenized in one piece, such a unit takes about 90 bytes of memory per
                # character, and it is one example of the split (50 MB on one line: 4.4 GB).
                raise UserInputError(
                    f"corpus {uri}: a {self.layout[:-1]} of {len(unit) / 1e6:.1f} million "
                    f"characters (at most {MAX_UNIT_CHARACTERS / 1e6:.0f} million); split the "
                    "text into lines (one sentence or paragraph each), or into "
                    "blank-line-separated documents with --layout documents"
                )
            if self.clean:
                unit = clean_text(unit)
            words = len(unit.split())
            if words < self.min_words or (self.max_words is not None and words > self.max_words):
                stats.filtered_units += 1
                continue
            stats.units += 1
            yield unit


def _units_by_file(
    files: list[str],
    filters: _UnitFilter,
    reading: _ReadingProgress | None,
    require_text: bool,
) -> Iterator[Iterator[str]]:
    position = reading.position if reading is not None else None
    for index, uri in enumerate(files):
        units = filters.units(uri, position)
        yield units
        for _ in units:  # what the caller left unread still counts, and is still checked
            pass
        if reading is not None:
            reading.file_done(index)
    if reading is not None:
        reading.meter.finish()
    if require_text:
        check_has_text(files, filters.stats, filters.layout, filters.min_words, filters.max_words)


def check_has_text(
    files: Sequence[str], stats: CorpusStats, layout: str, min_words: int, max_words: int | None
) -> None:
    """Raises when reading `files` (counted in `stats`) kept no unit at all.

    Raises:
        UserInputError: the files hold no text, or none of it passed the length filter.
    """
    if stats.units > 0:
        return
    where = ", ".join(files[:3]) + (" ..." if len(files) > 3 else "")
    if stats.filtered_units == 0:
        raise UserInputError(f"corpus {where}: no text found; pass non-empty text files")
    raise UserInputError(
        f"corpus {where}: no {layout[:-1]} has between {min_words} and "
        f"{max_words or 'any number of'} words; lower min_words (or raise max_words)"
    )


def preprocess_wiki_dump(
    input_file: str, output_file: str, min_length: int = 10, max_length: int = 1000
) -> CorpusStats:
    """Clean a markup corpus into one line per sentence/paragraph, keeping lines by word count.

    Args:
        input_file: a corpus (file, `.gz`, directory, glob or `gs://` URI).
        output_file: the cleaned text file (written atomically).
        min_length: minimum number of words a kept line has.
        max_length: maximum number of words a kept line has.

    Returns:
        The `CorpusStats` of the pass (lines read, units kept and filtered).
    """
    stats = CorpusStats()
    units = read_units(
        input_file, clean=True, min_words=min_length, max_words=max_length, stats=stats
    )
    with storage.atomic_write(output_file, "wb") as out:
        for unit in units:
            out.write(unit.encode("utf-8") + b"\n")
    return stats
