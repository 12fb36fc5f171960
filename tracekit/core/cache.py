"""A columnar cache of parsed traces: every command after the first loads each rank's
event table from here instead of decoding its JSON again.

Where an entry lives (the first that works):

1. ``$TRACEKIT_CACHE_DIR/<folder hash>/`` when that variable is set;
2. beside the trace, ``<trace folder>/.tracekit-cache/``, when that folder is writable;
3. the user cache, ``$XDG_CACHE_HOME/tracekit/<folder hash>/`` (default ``~/.cache``).

``<folder hash>`` names the trace's folder (its absolute path, hashed). One entry per
trace file, ``<trace file name>.tkc``; a newer entry replaces the old one.

Key: the trace file's size, its mtime (ns), a BLAKE2 hash of its first and last 64 KiB,
and the parser's own version (a hash of the parser's sources, ``tracekit.core.kineto``
and the ``tracekit.core`` modules it imports, and of the event schema, so changing the
parser or the schema invalidates every entry). An entry whose key
differs is stale: the trace is parsed again and the entry rewritten. An entry that cannot
be read back exactly (truncated, a checksum that does not match, a column of the wrong
length or type, a category code out of range) is damaged: it is ignored with a warning,
never trusted, and rebuilt. ``TRACEKIT_NO_CACHE=1`` (or ``--no-cache``, or
``IngestOptions(cache=False)``) neither reads nor writes entries.

Format (``.tkc``, little-endian)::

    b"TKCACHE1"  uint64 header length  header (JSON)  zero padding to 64 bytes
    column 0 bytes (padded to 64)  column 1 bytes ...

The header holds the key, the :class:`~tracekit.core.trace_meta.TraceMeta`, the warnings
the parse logged (repeated when the entry is used, so a cached trace warns like a parsed
one), and per column its dtype, length, offset, CRC-32 and, for a categorical, its
categories. One column more, ``__graph_rows__``, marks the rows of the compact table
(:mod:`tracekit.core.reduce`), so one entry serves both tables. With it, every column
holds the compact table's rows first (in order), then the others, each part with its own
CRC-32: the compact table is read straight into the run's arrays, the whole table is put
back in order through the mask (:class:`EntryReader`, :mod:`tracekit.core.assemble`).
An integer column whose rows all hold one value (``comm_bytes`` of a trace without
collective sizes: -1) is not stored: its spec says ``const`` and ``stored: false``; one
constant on the compact table's rows only is ``const_graph`` (that part need not be read).
Entries are written like every tracekit output (:mod:`tracekit.core.atomic`: a temporary
file in the same folder, fsync'ed, renamed into place), so a reader never sees half an
entry, and a killed writer's temporary file is swept by the next write.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from tracekit.core.atomic import atomic_output
from tracekit.core.schema import EVENT_COLUMNS
from tracekit.errors import TracekitError
from tracekit.log import get_logger

try:  # optional: ISA-L's CRC-32 is several times faster than zlib's
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - depends on the environment
    _crc32 = zlib.crc32

log = get_logger(__name__)

#: bump when the file layout changes (3: the compact table's rows first in every column)
FORMAT = 3
MAGIC = b"TKCACHE1"
FOLDER = ".tracekit-cache"
SUFFIX = ".tkc"
#: the extra column holding the compact table's rows (tracekit.core.reduce)
GRAPH_ROWS = "__graph_rows__"
_EDGE = 64 * 1024  # bytes of the trace's head and tail in the key
_ALIGN = 64


class DamagedEntry(Exception):
    """A cache entry that cannot be read back exactly (internal: logged, then rebuilt)."""


_CORE_IMPORT = re.compile(rb"^\s*(?:from|import)\s+tracekit\.core\.(\w+)", re.MULTILINE)


def _parser_sources() -> list[Path]:
    """The source files an entry is made by: the parser, :mod:`tracekit.core.kineto`, the
    reducer that marks the compact table's rows, :mod:`tracekit.core.reduce`, and every
    ``tracekit.core`` module they import, transitively (read from the sources)."""
    folder = Path(__file__).parent
    todo, seen = ["kineto", "reduce"], set()
    while todo:
        name = todo.pop()
        src = folder / f"{name}.py"
        if name in seen or not src.is_file():
            continue
        seen.add(name)
        try:
            todo += [m.decode() for m in _CORE_IMPORT.findall(src.read_bytes())]
        except OSError:  # pragma: no cover - a broken install
            continue
    return sorted(folder / f"{n}.py" for n in seen)


@functools.cache
def parser_version() -> str:
    """A hash of the cache format, the event schema and the parser's sources (see
    :func:`_parser_sources`): changing the parser invalidates every entry."""
    h = hashlib.blake2b(digest_size=12)
    h.update(f"format {FORMAT}".encode())
    h.update(json.dumps(EVENT_COLUMNS, sort_keys=True).encode())
    for src in _parser_sources():
        try:
            h.update(src.name.encode() + src.read_bytes())
        except OSError:  # pragma: no cover - a packaging without sources
            h.update(src.name.encode())
    return h.hexdigest()


def trace_key(path: Path) -> dict:
    """The key of ``path``'s entry: size, mtime, head-and-tail hash, parser version."""
    st = path.stat()
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        h.update(f.read(_EDGE))
        if st.st_size > 2 * _EDGE:
            f.seek(st.st_size - _EDGE)
        h.update(f.read(_EDGE))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "edges": h.hexdigest(),
            "parser": parser_version()}


def _folder_hash(folder: Path) -> str:
    return hashlib.blake2b(str(folder.resolve()).encode(), digest_size=8).hexdigest()


def user_cache_root() -> Path:
    """``$XDG_CACHE_HOME/tracekit`` (default ``~/.cache/tracekit``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tracekit"


def cache_disabled_by_env() -> bool:
    return os.environ.get("TRACEKIT_NO_CACHE", "").strip().lower() not in ("", "0", "no",
                                                                           "false", "off")


class TraceCache:
    """Read and write cache entries (see the module doc). ``root`` overrides every location
    (the ``TRACEKIT_CACHE_DIR`` variable does the same)."""

    def __init__(self, root: str | Path | None = None) -> None:
        root = root or os.environ.get("TRACEKIT_CACHE_DIR") or None
        self.root = Path(root) if root else None

    def folders(self, trace: Path) -> list[Path]:
        """Where ``trace``'s entry may be, in lookup order."""
        if self.root is not None:
            return [self.root / _folder_hash(trace.parent)]
        return [trace.parent / FOLDER, user_cache_root() / _folder_hash(trace.parent)]

    def load(self, trace: Path) -> tuple[pd.DataFrame, dict, list] | None:
        """``(events, meta fields, logged warnings)`` from a valid entry, else None (a
        damaged entry is logged and ignored; a stale one is silently ignored)."""
        reader = self.open(trace)
        if reader is None:
            return None
        try:
            return reader.to_frame(), reader.meta, reader.logs
        except DamagedEntry as exc:
            log.warning("%s: damaged cache entry %s (%s); parsing the trace again",
                        trace, reader.path, exc)
            return None

    def open(self, trace: Path) -> EntryReader | None:
        """A reader of ``trace``'s valid entry (its header checked; columns are read and
        checked on demand), else None. A damaged entry is logged and ignored."""
        try:
            key = trace_key(trace)
        except OSError:
            return None
        for folder in self.folders(trace):
            entry = folder / (trace.name + SUFFIX)
            if not entry.is_file():
                continue
            try:
                reader = EntryReader.open(entry, key)
            except DamagedEntry as exc:
                log.warning("%s: damaged cache entry %s (%s); parsing the trace again",
                            trace, entry, exc)
                continue
            if reader is not None:
                return reader
        return None

    def store(self, trace: Path, events: pd.DataFrame, meta: dict, logs: list, *,
              graph_rows: np.ndarray | None = None) -> Path | None:
        """Write ``trace``'s entry into the first writable folder; None when none is (a cache
        that cannot be written is not an error). ``graph_rows``: the rows of the compact
        table (:mod:`tracekit.core.reduce`), kept beside the columns."""
        try:
            key = trace_key(trace)
        except OSError:
            return None
        for folder in self.folders(trace):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                entry = folder / (trace.name + SUFFIX)
                write_entry(entry, key, events, meta, logs, graph_rows=graph_rows)
                return entry
            except (OSError, TracekitError) as exc:
                log.debug("cannot write a cache entry in %s (%s)", folder, exc)
        return None


def _encode_columns(events: pd.DataFrame) -> tuple[list[dict], list[np.ndarray]]:
    specs, arrays = [], []
    for col in events.columns:
        series = events[col]
        spec: dict = {"name": col}
        if isinstance(series.dtype, pd.CategoricalDtype):
            arr = np.ascontiguousarray(series.cat.codes.to_numpy())
            spec["categories"] = [str(c) for c in series.cat.categories]
        else:
            arr = np.ascontiguousarray(series.to_numpy())
        if arr.dtype == object:
            raise TypeError(f"column {col!r} holds Python objects; not cacheable")
        spec.update(dtype=arr.dtype.str, length=len(arr), crc=_crc32(arr.view(np.uint8)))
        specs.append(spec)
        arrays.append(arr)
    return specs, arrays


def _pad(n: int) -> int:
    return -n % _ALIGN


def column_constant(arr: np.ndarray) -> int | None:
    """The value of every entry of an integer array, or None (several, or none)."""
    if len(arr) == 0 or arr.dtype.kind not in "iu":
        return None
    lo = int(arr.min())
    return lo if lo == int(arr.max()) else None


def _mark_constants(specs: list[dict], arrays: list[np.ndarray], n_graph: int | None) -> None:
    """``const`` (``const_graph``: over the compact table's rows) in the spec of an integer
    column whose rows all hold one value: a reader need not read it; a column constant on
    every row is not stored at all (its array becomes empty)."""
    for i, (spec, arr) in enumerate(zip(specs, arrays)):
        if "categories" in spec:
            continue
        spec["const"] = column_constant(arr)
        if n_graph is not None:
            spec["const_graph"] = column_constant(arr[:n_graph])
        if spec["const"] is not None:
            spec["stored"] = False
            spec.pop("crc", None)
            spec.pop("crc_rest", None)
            arrays[i] = arr[:0]


def _graph_first(specs: list[dict], arrays: list[np.ndarray],
                 mask: np.ndarray) -> tuple[int, list[np.ndarray]]:
    """Every column with the rows where ``mask`` holds first, then the others; each
    spec's ``crc`` becomes the first part's CRC-32 and ``crc_rest`` the second's."""
    order = np.concatenate([np.flatnonzero(mask), np.flatnonzero(~mask)])
    n = int(mask.sum())
    out = []
    for spec, arr in zip(specs, arrays):
        arr = arr.take(order)
        spec["crc"] = _crc32(arr[:n].view(np.uint8))
        spec["crc_rest"] = _crc32(arr[n:].view(np.uint8))
        out.append(arr)
    return n, out


def write_entry(entry: Path, key: dict, events: pd.DataFrame, meta: dict, logs: list, *,
                graph_rows: np.ndarray | None = None) -> None:
    """Write one entry atomically (a temporary file in the same folder, then a rename)."""
    specs, arrays = _encode_columns(events)
    extra = {}
    if graph_rows is not None:
        keep = np.asarray(graph_rows, dtype=bool)
        extra["graph_rows"], arrays = _graph_first(specs, arrays, keep)
    _mark_constants(specs, arrays, extra.get("graph_rows"))
    if graph_rows is not None:
        mask = np.ascontiguousarray(keep, dtype=np.uint8)
        specs.append({"name": GRAPH_ROWS, "dtype": mask.dtype.str, "length": len(mask),
                      "crc": _crc32(mask)})
        arrays.append(mask)
    offset = 0
    for spec, arr in zip(specs, arrays):
        spec["offset"] = offset
        offset += arr.nbytes + _pad(arr.nbytes)
    header = json.dumps({"format": FORMAT, "key": key, "meta": meta, "logs": logs,
                         "rows": len(events), "columns": specs, "data_bytes": offset,
                         **extra}).encode()
    head = MAGIC + len(header).to_bytes(8, "little") + header
    head += b"\0" * _pad(len(head))
    with atomic_output(entry, what="the cache entry") as f:
        f.write(head)
        for arr in arrays:
            f.write(memoryview(arr).cast("B"))
            f.write(b"\0" * _pad(arr.nbytes))


def _read_header(f, entry: Path) -> tuple[dict, int]:
    start = f.read(16)
    if len(start) < 16 or start[:8] != MAGIC:
        raise DamagedEntry("not a tracekit cache entry")
    n = int.from_bytes(start[8:], "little")
    if n > 1 << 30:
        raise DamagedEntry("header length out of range")
    raw = f.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise DamagedEntry("header is not valid JSON") from None
    if not isinstance(header, dict):
        raise DamagedEntry("header is not an object")
    data_start = 16 + n + _pad(16 + n)
    return header, data_start


def read_entry(entry: Path, key: dict) -> tuple[pd.DataFrame, dict, list] | None:
    """The entry's ``(events, meta, logs)``; None when its key differs from ``key``
    (stale). Raises :class:`DamagedEntry` when it cannot be read back exactly."""
    reader = EntryReader.open(entry, key)
    if reader is None:
        return None
    return reader.to_frame(), reader.meta, reader.logs


class EntryReader:
    """One entry whose header was read and checked; each column is read (and its
    checksum and category codes checked) when asked for, straight into a given array."""

    def __init__(self, path: Path, header: dict, data_start: int) -> None:
        self.path = path
        self.rows = int(header["rows"])
        self.meta = dict(header["meta"])
        self.logs = list(header.get("logs", []))
        graph_rows = header.get("graph_rows")
        #: rows of the compact table, when the entry keeps its mask (else None); each
        #: column then holds those rows first
        self.graph_rows = int(graph_rows) if graph_rows is not None else None
        self._specs = {spec["name"]: spec for spec in header["columns"]}
        self._start = data_start
        self._mask: np.ndarray | None = None

    @classmethod
    def open(cls, entry: Path, key: dict) -> EntryReader | None:
        """The reader of ``entry``; None when stale (another key or format); raises
        :class:`DamagedEntry` when the header or the file size is wrong."""
        try:
            with open(entry, "rb") as f:
                header, data_start = _read_header(f, entry)
                size = os.fstat(f.fileno()).st_size
        except OSError as exc:
            raise DamagedEntry(f"cannot read ({exc.strerror or exc})") from None
        if "format" not in header or not isinstance(header.get("key"), dict):
            raise DamagedEntry("header lacks its format or key")
        if header["format"] != FORMAT or header["key"] != key:
            return None  # stale: written by another parser, or for another file
        try:
            expected = data_start + int(header["data_bytes"])
            if size != expected:
                raise DamagedEntry(f"{size} bytes, expected {expected} (truncated?)")
            reader = cls(entry, header, data_start)
            reader._check(int(header["data_bytes"]))
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise DamagedEntry(f"{type(exc).__name__}: {exc}") from None
        return reader

    def _check(self, data_bytes: int) -> None:
        names = [n for n in self._specs if n != GRAPH_ROWS]
        if names != list(EVENT_COLUMNS):
            raise DamagedEntry("columns differ from the event schema")
        for name, spec in self._specs.items():
            dtype = np.dtype(spec["dtype"])
            if dtype.hasobject or int(spec["length"]) != self.rows:
                raise DamagedEntry(f"column {name!r} has a bad type or length")
            stored = spec.get("stored", True)
            if stored is not True and not (stored is False and spec.get("const") is not None):
                raise DamagedEntry(f"column {name!r} is neither stored nor constant")
            if stored and int(spec["offset"]) + self.rows * dtype.itemsize > data_bytes:
                raise DamagedEntry(f"column {name!r} lies outside the file")
            want = EVENT_COLUMNS.get(name, ("uint8", ""))[0]
            if want == "category":
                if dtype.kind != "i" or not isinstance(spec.get("categories"), list):
                    raise DamagedEntry(f"column {name!r} is not a categorical")
            elif dtype != np.dtype(want):
                raise DamagedEntry(f"column {name!r} is {dtype}, expected {want}")
            for k in ("const", "const_graph"):
                v = spec.get(k)
                if v is not None and (type(v) is not int or not (
                        np.iinfo(dtype).min <= v <= np.iinfo(dtype).max)):
                    raise DamagedEntry(f"column {name!r} has a bad constant")
        if self.graph_rows is not None:
            if GRAPH_ROWS not in self._specs or not 0 <= self.graph_rows <= self.rows:
                raise DamagedEntry("the compact-table mask is missing")
            if any("crc_rest" not in spec for n, spec in self._specs.items()
                   if n != GRAPH_ROWS and spec.get("stored", True)):
                raise DamagedEntry("a column lacks the checksum of its second part")

    def categories(self, name: str) -> list[str] | None:
        """The categories of a categorical column (None for other columns)."""
        cats = self._specs[name].get("categories")
        return [str(c) for c in cats] if cats is not None else None

    def dtype(self, name: str) -> np.dtype:
        return np.dtype(self._specs[name]["dtype"])

    def constant(self, name: str, graph: bool = False) -> int | None:
        """The one value every row of column ``name`` (of the compact table's rows with
        ``graph``) holds, when the writer found one; else None (read the column)."""
        return self._specs[name].get("const_graph" if graph else "const")

    def _read_part(self, name: str, arr: np.ndarray, first: int, crc: int) -> None:
        """Stored rows ``first .. first + len(arr)`` of column ``name`` into ``arr``,
        checked against ``crc`` (and the category codes against the categories)."""
        spec = self._specs[name]
        buf = memoryview(arr).cast("B")
        try:
            with open(self.path, "rb") as f:
                f.seek(self._start + int(spec["offset"]) + first * arr.itemsize)
                got = f.readinto(buf)
        except OSError as exc:
            raise DamagedEntry(f"cannot read ({exc.strerror or exc})") from None
        if got != arr.nbytes:
            raise DamagedEntry(f"column {name!r} is truncated")
        if _crc32(buf) != int(crc):
            raise DamagedEntry(f"column {name!r} fails its checksum")
        cats = spec.get("categories")
        if cats is not None and len(arr) and (int(arr.min()) < -1
                                              or int(arr.max()) >= len(cats)):
            raise DamagedEntry(f"column {name!r} has a category code out of range")

    def _out(self, name: str, out: np.ndarray | None, n: int) -> np.ndarray:
        dtype = np.dtype(self._specs[name]["dtype"])
        arr = np.empty(n, dtype=dtype) if out is None else out
        if arr.dtype != dtype or len(arr) != n:
            raise ValueError(f"read {name!r}: out has the wrong type or length")
        return arr

    def read(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        """Column ``name`` (category codes for a categorical) in the table's row order,
        read into ``out`` when given (its dtype and length must match); raises
        :class:`DamagedEntry`."""
        spec = self._specs[name]
        arr = self._out(name, out, self.rows)
        if not spec.get("stored", True):
            arr[...] = spec["const"]
            return arr
        if self.graph_rows is None or name == GRAPH_ROWS:
            self._read_part(name, arr, 0, spec["crc"])
            return arr
        n = self.graph_rows
        stored = np.empty(self.rows, dtype=arr.dtype)
        self._read_part(name, stored[:n], 0, spec["crc"])
        self._read_part(name, stored[n:], n, spec["crc_rest"])
        mask = self.mask()
        arr[mask] = stored[:n]
        arr[~mask] = stored[n:]
        return arr

    def read_graph(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        """Column ``name`` of the compact table only (its :attr:`graph_rows` rows, stored
        first), read straight into ``out`` when given; raises :class:`DamagedEntry`."""
        if self.graph_rows is None:
            raise ValueError("this entry does not mark the compact table's rows")
        arr = self._out(name, out, self.graph_rows)
        spec = self._specs[name]
        if not spec.get("stored", True):
            arr[...] = spec["const"]
        else:
            self._read_part(name, arr, 0, spec["crc"])
        return arr

    def mask(self) -> np.ndarray:
        """Rows of the compact table (bool), in the table's row order."""
        if self._mask is None:
            mask = self.read(GRAPH_ROWS).astype(bool)
            if int(mask.sum()) != self.graph_rows:
                raise DamagedEntry("the compact-table mask does not match its row count")
            self._mask = mask
        return self._mask

    def to_frame(self) -> pd.DataFrame:
        """Every column, as an event table."""
        columns = {}
        for name in EVENT_COLUMNS:
            arr = self.read(name)
            cats = self.categories(name)
            columns[name] = (pd.Categorical.from_codes(arr, cats, validate=False)
                             if cats is not None else arr)
        return pd.DataFrame(columns, copy=False)


def meta_fields(meta) -> dict:
    """A :class:`~tracekit.core.trace_meta.TraceMeta` as JSON-able fields."""
    return dataclasses.asdict(meta)
