"""Pathfinder (Linsley et al. 2018; LRA's Pathfinder-32): are the two markers on the same dashed path?

Each image holds two target "snakes" (paths of ``contour_length`` dashes, "paddles", each ``paddle_length`` px
long with ``paddle_margin`` px gaps), ``num_distractors`` shorter distractor snakes and two round markers. The label
is drawn uniformly: 1 = both markers sit on the two ends of one snake (connected), 0 = one marker on each snake.

This is a vectorised re-implementation of the essentials of the PF generator (``snakes2.py``), drawing a whole batch
of images step by step with numpy, not a port. Our reading of its parameters (the PF source is not at hand):
- a snake starts at a random point with a random heading; after each paddle the heading turns by a uniform angle
  in ``[-continuity, +continuity] * 30 degrees`` (smaller continuity = straighter paths);
- a paddle may not leave the image (``padding`` px border) or come within 1 px of another snake or of its own
  earlier paddles, gaps included, so paths never cross; up to ``tries`` headings are tried, the k-th turning by up
  to k times the usual angle (at most 120 degrees) so a path can bend away from a wall, else the snake stops
  there. An image whose target snakes cannot reach full length, or whose markers are closer than
  ``seed_distance``, is redrawn;
- drawing happens on a canvas ``antialias`` times larger, then is average-pooled (anti-aliasing), so intensities are
  multiples of 1/antialias^2 of the stroke contrast.
The marker distance is bounded below in both classes so that it does not give the label away.

Files: ``{train,val,test}.npz`` with ``images`` uint8 ``[N, H, W]`` and ``labels`` int64 ``[N]``, plus ``preview.png``.
LRA's released folders (``pathfinder32/curv_contour_length_14/{imgs,metadata}``) are read by :func:`read_lra_folder`.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kernelized._checks import check_positive_int

SPLITS = ("train", "val", "test")


@dataclass
class PathfinderConfig:
    """Generator settings, in output pixels. ``preset("pf32")`` follows LRA's Pathfinder-32 builder."""

    size: int = 32
    padding: int = 1
    antialias: int = 2
    paddle_length: float = 2.0
    paddle_margin: float = 1.0
    contour_length: int = 14
    continuity: float = 1.0
    distractor_length: int = 4
    num_distractors: int = 5
    marker_radius: float = 1.5
    seed_distance: float = 7.0
    contrast: float = 1.0
    tries: int = 12

    @staticmethod
    def preset(name: str) -> PathfinderConfig:
        presets = {
            # LRA Pathfinder-32: paddle 2 / margin 1, marker 1.5, contour 14, seed distance 7, continuity 1,
            # distractor_length 14 // 3 = 4, 20 // 4 = 5 distractors, antialias 2
            "pf32": PathfinderConfig(),
            # a CPU-sized variant (ours): 16x16 = 256 tokens, shorter paths, fewer distractors
            "pf16": PathfinderConfig(
                size=16,
                contour_length=6,
                distractor_length=2,
                num_distractors=3,
                marker_radius=1.0,
                seed_distance=4.0,
            ),
        }
        if name not in presets:
            raise ValueError(f"pathfinder preset must be one of {sorted(presets)}, got {name!r}")
        return presets[name]

    def validate(self) -> None:
        check_positive_int("size", self.size, minimum=8)
        check_positive_int("antialias", self.antialias)
        check_positive_int("contour_length", self.contour_length)
        check_positive_int("distractor_length", self.distractor_length)
        check_positive_int("num_distractors", self.num_distractors, minimum=0)
        check_positive_int("tries", self.tries)
        for name in ("paddle_length", "paddle_margin", "marker_radius", "continuity"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


class _Canvas:
    """A batch of drawing canvases ``[N, S, S]`` (S = size * antialias).

    ``ink`` holds the snake id of every drawn pixel (0 = empty); ``near`` marks every pixel within 1 output px of a
    drawn pixel or of the gaps between a snake's dashes, so no snake can cross or touch a dashed path.
    """

    def __init__(self, n: int, cfg: PathfinderConfig):
        self.cfg = cfg
        self.a = cfg.antialias
        self.S = cfg.size * cfg.antialias
        self.ink = np.zeros((n, self.S, self.S), dtype=np.int16)
        # sample points along a paddle, dense enough that consecutive samples are < 1 canvas px apart
        num = max(2, int(math.ceil(cfg.paddle_length * self.a)) + 2)
        self.paddle_t = np.linspace(0.0, cfg.paddle_length, num)
        self.near = np.zeros((n, self.S, self.S), dtype=bool)  # within 1 output px of a blocked pixel
        # the gap after it, without its far end (where the next paddle starts)
        gap = cfg.paddle_margin
        self.gap_t = cfg.paddle_length + np.linspace(0.0, gap, max(2, int(math.ceil(gap * self.a)) + 2))[1:-1]

    def points(self, start: np.ndarray, angle: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Canvas pixels ``[..., P, 2]`` (row, col) at distances ``t [P]`` from ``start [..., 2]`` along ``angle``."""
        d = np.stack([np.sin(angle), np.cos(angle)], axis=-1)
        pts = start[..., None, :] + t[:, None] * d[..., None, :]
        return np.floor(pts * self.a).astype(np.int64)

    def _mark(self, canvas: np.ndarray, images: np.ndarray, pts: np.ndarray, value: int) -> None:
        """``canvas[images[i], pts[i, p]] = value`` for all i, p."""
        P = pts.shape[1]
        canvas[np.repeat(images, P), pts[:, :, 0].ravel(), pts[:, :, 1].ravel()] = value

    def _block(self, images: np.ndarray, pts: np.ndarray) -> None:
        """Mark the 1-output-px neighbourhood of ``pts [n, P, 2]`` in ``near``."""
        for dr in range(-self.a, self.a + 1):
            for dc in range(-self.a, self.a + 1):
                shifted = np.clip(pts + np.array([dr, dc]), 0, self.S - 1)
                self._mark(self.near, images, shifted, True)

    def walk(self, idx: np.ndarray, snake_id: int, length: int, rng: np.random.Generator):
        """Draw one snake of ``length`` paddles in images ``idx``; returns (start, end, paddles drawn) per image."""
        cfg, n = self.cfg, len(idx)
        lo, hi = cfg.padding, cfg.size - cfg.padding
        pos = rng.uniform(lo, hi, size=(n, 2))
        start = pos.copy()
        angle = np.zeros(n)
        alive = np.ones(n, dtype=bool)
        drawn = np.zeros(n, dtype=np.int64)
        lo_px, hi_px = lo * self.a, hi * self.a
        rows = np.arange(n)
        max_turn = cfg.continuity * math.pi / 6
        widen = np.minimum(np.arange(1, cfg.tries + 1) * max_turn, 2 * math.pi / 3)
        step_len = cfg.paddle_length + cfg.paddle_margin
        last_end = pos.copy()
        pending = None  # the previous paddle and gap: its own snake's block is updated one step late
        for step in range(length):
            # candidate headings: the first try turns by at most max_turn, later tries by more
            # (wider for each retry, so a snake can bend away from a wall or another snake)
            if step == 0:
                cand = rng.uniform(0, 2 * math.pi, size=(n, cfg.tries))
            else:
                cand = angle[:, None] + rng.uniform(-1.0, 1.0, size=(n, cfg.tries)) * widen  # [n, K]
            start_k = np.broadcast_to(pos[:, None, :], (n, cfg.tries, 2))
            pts = self.points(start_k, cand, self.paddle_t)  # [n, K, P, 2]
            gap = self.points(start_k, cand, self.gap_t)  # [n, K, G, 2]
            r, c = pts[..., 0], pts[..., 1]
            # the next paddle's start (after the gap) must be inside too, or the snake walks into a dead end
            nxt = pos[:, None, :] + np.stack([np.sin(cand), np.cos(cand)], axis=-1) * step_len
            inside = ((r >= lo_px) & (r < hi_px) & (c >= lo_px) & (c < hi_px)).all(-1)
            inside &= ((nxt >= lo) & (nxt < hi)).all(-1)
            # 1 output px clearance from every blocked pixel (``near`` is the blocked set, dilated): other snakes,
            # and this snake's paddles before the previous one (so it cannot cross itself either)
            rc, cc = np.clip(r, 0, self.S - 1), np.clip(c, 0, self.S - 1)
            hit = self.near[idx[:, None, None], rc, cc].any(-1)
            ok = inside & ~hit
            choice = ok.argmax(1)
            can = ok[rows, choice] & alive
            alive &= can
            if pending is not None:
                self._block(*pending)
                pending = None
            if not can.any():
                break
            w = np.flatnonzero(can)
            chosen = pts[rows, choice][w]  # [w, P, 2]
            self._mark(self.ink, idx[w], chosen, snake_id)
            g = np.clip(gap[rows, choice][w], 0, self.S - 1)
            pending = (idx[w], np.concatenate([chosen, g], axis=1))
            angle = np.where(can, cand[rows, choice], angle)
            d = np.stack([np.sin(angle), np.cos(angle)], axis=-1)
            last_end = np.where(can[:, None], pos + d * cfg.paddle_length, last_end)
            pos = np.where(can[:, None], pos + d * step_len, pos)
            drawn += can
        if pending is not None:
            self._block(*pending)
        return start, last_end, drawn

    def disks(self, centers: np.ndarray, radius: float) -> np.ndarray:
        """Boolean disks ``[N, S, S]`` around ``centers [N, 2]`` (output px)."""
        grid = (np.arange(self.S) + 0.5) / self.a
        dy = grid[None, :, None] - centers[:, 0, None, None]
        dx = grid[None, None, :] - centers[:, 1, None, None]
        return dy**2 + dx**2 <= radius**2

    def render(self, marks: np.ndarray) -> np.ndarray:
        """Average-pool the strokes and markers to ``[N, size, size]`` uint8."""
        ink = ((self.ink > 0) | marks).astype(np.float32)
        n, a, s = len(ink), self.a, self.cfg.size
        img = ink.reshape(n, s, a, s, a).mean(axis=(2, 4))
        return np.round(img * 255 * min(1.0, self.cfg.contrast)).astype(np.uint8)


def _draw_batch(n: int, cfg: PathfinderConfig, rng: np.random.Generator):
    """Draw ``n`` candidate images; return (images [m, H, W], labels [m]) for the m that came out valid."""
    canvas = _Canvas(n, cfg)
    idx = np.arange(n)
    s1, e1, d1 = canvas.walk(idx, 1, cfg.contour_length, rng)
    s2, e2, d2 = canvas.walk(idx, 2, cfg.contour_length, rng)
    for k in range(cfg.num_distractors):
        canvas.walk(idx, 3 + k, cfg.distractor_length, rng)
    labels = rng.integers(0, 2, size=n)
    # markers: at the start of snake 1 and at the end of snake 1 (label 1) or of snake 2 (label 0)
    m1 = s1
    m2 = np.where(labels[:, None] == 1, e1, e2)
    full = (d1 == cfg.contour_length) & (d2 == cfg.contour_length)
    far = np.linalg.norm(m1 - m2, axis=1) >= cfg.seed_distance
    marks = canvas.disks(m1, cfg.marker_radius) | canvas.disks(m2, cfg.marker_radius)
    images = canvas.render(marks)
    keep = full & far
    return images[keep], labels[keep]


def generate(
    num_examples: int,
    *,
    seed: int = 0,
    config: PathfinderConfig | None = None,
    batch_size: int = 512,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``num_examples`` images uint8 ``[N, H, W]`` and labels int64 ``[N]``, deterministic given the seed."""
    check_positive_int("num_examples", num_examples)
    cfg = config or PathfinderConfig()
    cfg.validate()
    rng = np.random.default_rng(seed)
    images, labels, have = [], [], 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num_examples, desc="pathfinder", unit="img")
    tries = 0
    while have < num_examples:
        im, lb = _draw_batch(batch_size, cfg, rng)
        tries += 1
        if tries > 20 and have == 0:
            raise RuntimeError(f"pathfinder settings {cfg} produce no valid image; make the paths shorter")
        images.append(im)
        labels.append(lb)
        have += len(lb)
        if bar is not None:
            bar.update(min(len(lb), num_examples - bar.n))
    if bar is not None:
        bar.close()
    return np.concatenate(images)[:num_examples], np.concatenate(labels)[:num_examples].astype(np.int64)


def split_sizes(num_examples: int) -> tuple[int, int, int]:
    """LRA's 80/10/10 split."""
    held = max(1, num_examples // 10)
    return num_examples - 2 * held, held, held


def save_preview(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, num: int = 16) -> None:
    """A PNG grid of the first ``num`` images with their labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num = min(num, len(images))
    cols = min(8, num)
    rows = int(math.ceil(num / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(num):
        ax = axes.ravel()[i]
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        ax.set_title("connected" if labels[i] == 1 else "apart", fontsize=8)
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def write_splits(
    out_dir: str | os.PathLike,
    num_examples: int,
    *,
    seed: int = 0,
    config: PathfinderConfig | None = None,
    progress: bool = False,
) -> dict[str, Path]:
    """Generate and write ``{train,val,test}.npz``, ``config.json`` and ``preview.png`` under ``out_dir``."""
    import json

    check_positive_int("num_examples", num_examples, minimum=3)
    cfg = config or PathfinderConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images, labels = generate(num_examples, seed=seed, config=cfg, progress=progress)
    n_train, n_val, _ = split_sizes(num_examples)
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, num_examples)}
    paths = {}
    for split, (a, b) in bounds.items():
        paths[split] = out_dir / f"{split}.npz"
        tmp = out_dir / f"{split}.tmp.npz"
        np.savez_compressed(tmp, images=images[a:b], labels=labels[a:b])
        os.replace(tmp, paths[split])
    paths["config"] = out_dir / "config.json"
    paths["config"].write_text(json.dumps({**asdict(cfg), "seed": seed, "num_examples": num_examples}, indent=1))
    paths["preview"] = out_dir / "preview.png"
    save_preview(paths["preview"], images, labels)
    return paths


def read_split(data_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``images`` uint8 ``[N, H, W]`` and ``labels`` ``[N]`` from ``<data_dir>/<split>.npz``; errors name the file."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    path = Path(data_dir) / f"{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"Pathfinder file not found: {path} (write it with `kernelized data pathfinder`)")
    try:
        with np.load(path) as z:
            missing = [k for k in ("images", "labels") if k not in z.files]
            if not missing:
                images, labels = z["images"], z["labels"]
    except Exception as e:  # zip or pickle errors from a truncated or foreign file
        raise ValueError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    if missing:
        raise ValueError(f"{path}: missing array(s) {missing}; expected 'images' and 'labels'")
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{path}: field 'images' must be uint8 [N, H, W], got {images.dtype} {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"{path}: field 'labels' must have shape ({len(images)},), got {labels.shape}")
    return images, labels.astype(np.int64)


def read_lra_folder(folder: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split of a released Pathfinder difficulty folder (e.g. ``lra_release/pathfinder32/curv_baseline``).

    Layout (PF ``snakes2.py``, S4's ``PathFinderDataset``): ``metadata/<batch>.npy`` are text files, one line per
    image, ``subpath filename idx label ...``; the image is ``<folder>/<subpath>/<filename>`` (a gray PNG).
    All images in metadata order are split 80/10/10 like LRA (``[:80%]``, ``[80%:90%]``, ``[90%:]``).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    folder = Path(folder)
    meta_dir = folder / "metadata"
    if not meta_dir.is_dir():
        raise FileNotFoundError(f"Pathfinder folder {folder} has no metadata/ folder (LRA's layout)")
    entries = []
    for meta in sorted(meta_dir.glob("*.npy"), key=lambda p: (len(p.stem), p.stem)):
        for lineno, line in enumerate(meta.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 4 or fields[3] not in ("0", "1"):
                raise ValueError(
                    f"{meta}:{lineno}: expected 'subpath filename idx label ...' with label 0/1, got {line!r}"
                )
            entries.append((folder / fields[0] / fields[1], int(fields[3])))
    if not entries:
        raise ValueError(f"{meta_dir}: no metadata lines")
    n = len(entries)
    bounds = {"train": (0, int(0.8 * n)), "val": (int(0.8 * n), int(0.9 * n)), "test": (int(0.9 * n), n)}
    a, b = bounds[split]
    from PIL import Image

    images, labels = [], []
    for path, label in entries[a:b]:
        try:
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("L"), dtype=np.uint8))
        except (OSError, ValueError) as e:  # missing, empty or corrupt PNG
            raise ValueError(f"{path}: unreadable Pathfinder image ({type(e).__name__}: {e})") from None
        labels.append(label)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"{folder}: images of different sizes {sorted(shapes)}")
    return np.stack(images), np.array(labels, dtype=np.int64)
