"""Pathfinder generator: labels mean what they say, paths never touch, determinism, files and bad files."""

from __future__ import annotations

import numpy as np
import pytest

from kernelized.data import cli, pathfinder
from kernelized.data.pathfinder import PathfinderConfig, _Canvas


def test_snakes_have_their_length_start_end_and_never_touch():
    cfg = PathfinderConfig.preset("pf32")
    rng = np.random.default_rng(0)
    canvas = _Canvas(64, cfg)
    idx = np.arange(64)
    ends = {}
    for sid, length in [(1, 14), (2, 14), (3, 4), (4, 4), (5, 4)]:
        ends[sid] = canvas.walk(idx, sid, length, rng)
    a = cfg.antialias
    assert (ends[1][2] == 14).mean() > 0.5  # most first snakes reach full length
    for sid, (start, end, drawn) in ends.items():
        ok = drawn > 0  # a snake may find no room at all (then the image is redrawn or it has one distractor less)
        assert ok.mean() > 0.5
        for pt in (start, end):  # both ends of a snake lie on its own ink
            pix = np.floor(pt[ok] * a).astype(int)
            assert (canvas.ink[idx[ok], pix[:, 0], pix[:, 1]] == sid).all()
    # no two snakes within one drawing pixel of each other (8-neighbourhood): paths never cross or touch
    ink = canvas.ink
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            shifted = np.roll(np.roll(ink, dr, axis=1), dc, axis=2)
            clash = (ink > 0) & (shifted > 0) & (ink != shifted)
            assert not clash[:, 1:-1, 1:-1].any()


def test_labels_put_markers_on_one_snake_or_two(monkeypatch):
    """Record the marker centres the generator uses and check them against the snakes' ends."""
    cfg = PathfinderConfig.preset("pf16")
    seen = {}
    real_walk = _Canvas.walk

    def walk(self, idx, snake_id, length, rng):
        out = real_walk(self, idx, snake_id, length, rng)
        seen[snake_id] = out
        return out

    real_disks = _Canvas.disks
    centres = []

    def disks(self, c, radius):
        centres.append(c.copy())
        return real_disks(self, c, radius)

    monkeypatch.setattr(_Canvas, "walk", walk)
    monkeypatch.setattr(_Canvas, "disks", disks)
    rng = np.random.default_rng(5)
    images, labels = pathfinder._draw_batch(256, cfg, rng)
    # every candidate image: marker 1 at the start of snake 1, marker 2 at the end of snake 1 or of snake 2
    (s1, e1, d1), (_, e2, d2) = seen[1], seen[2]
    m1, m2 = centres
    assert np.allclose(m1, s1)
    connected = np.all(np.isclose(m2, e1), axis=1)
    apart = np.all(np.isclose(m2, e2), axis=1)
    assert (connected ^ apart).all()
    assert len(images) == len(labels) > 0
    assert set(np.unique(labels)) == {0, 1}
    full = (d1 == cfg.contour_length) & (d2 == cfg.contour_length)
    far = np.linalg.norm(m1 - m2, axis=1) >= cfg.seed_distance
    assert connected[full & far].sum() == labels.sum()  # kept images: label 1 exactly when connected


def test_generate_shapes_determinism_and_markers_bright():
    cfg = PathfinderConfig.preset("pf16")
    images, labels = pathfinder.generate(40, seed=1, config=cfg)
    assert images.shape == (40, 16, 16) and images.dtype == np.uint8
    assert labels.shape == (40,) and set(np.unique(labels)) == {0, 1}
    again, labels2 = pathfinder.generate(40, seed=1, config=cfg)
    assert np.array_equal(images, again) and np.array_equal(labels, labels2)
    other, _ = pathfinder.generate(40, seed=2, config=cfg)
    assert not np.array_equal(images, other)
    assert (images.reshape(40, -1).max(1) == 255).all()  # marker disks are full intensity
    assert 0.03 < (images > 0).mean() < 0.6  # strokes, not an empty or a filled canvas


def test_write_read_round_trip_and_preview(tmp_path):
    cfg = PathfinderConfig.preset("pf16")
    paths = pathfinder.write_splits(tmp_path, 30, seed=0, config=cfg)
    images, labels = pathfinder.generate(30, seed=0, config=cfg)
    got = [pathfinder.read_split(tmp_path, s) for s in ("train", "val", "test")]
    assert [len(g[0]) for g in got] == [24, 3, 3]
    assert np.array_equal(np.concatenate([g[0] for g in got]), images)
    assert np.array_equal(np.concatenate([g[1] for g in got]), labels)
    assert paths["preview"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_files_and_settings(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.npz"):
        pathfinder.read_split(tmp_path, "train")
    (tmp_path / "val.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="val.npz: not a readable .npz"):
        pathfinder.read_split(tmp_path, "val")
    np.savez(tmp_path / "test.npz", images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"test.npz: missing array\(s\) \['labels'\]"):
        pathfinder.read_split(tmp_path, "test")
    np.savez(tmp_path / "train.npz", images=np.zeros((2, 4, 4), np.float32), labels=np.zeros(2))
    with pytest.raises(ValueError, match="field 'images' must be uint8"):
        pathfinder.read_split(tmp_path, "train")
    with pytest.raises(ValueError, match="pathfinder preset must be one of"):
        PathfinderConfig.preset("pf1024")
    with pytest.raises(ValueError, match="contour_length"):
        pathfinder.generate(3, config=PathfinderConfig(contour_length=0))


def test_cli(tmp_path):
    assert cli.main(["pathfinder", "--out", str(tmp_path), "--num-examples", "20", "--preset", "pf16"]) == 0
    images, labels = pathfinder.read_split(tmp_path, "train")
    assert images.shape == (16, 16, 16)
    assert (tmp_path / "preview.png").exists()


def _lra_folder(root, images, labels):
    """LRA's layout: imgs/<batch>/sample_<i>.png and metadata/<batch>.npy text lines."""
    from PIL import Image

    (root / "imgs" / "0").mkdir(parents=True)
    (root / "metadata").mkdir()
    lines = []
    for i, (im, lb) in enumerate(zip(images, labels)):
        Image.fromarray(im).save(root / "imgs" / "0" / f"sample_{i}.png")
        lines.append(f"imgs/0 sample_{i}.png {i} {lb} 32 0 1")
    (root / "metadata" / "0.npy").write_text("\n".join(lines) + "\n")


def test_reads_lras_released_folders(tmp_path):
    from kernelized.data import lra

    images, labels = pathfinder.generate(20, seed=4, config=PathfinderConfig.preset("pf16"))
    _lra_folder(tmp_path, images, labels)
    got = [pathfinder.read_lra_folder(tmp_path, s) for s in ("train", "val", "test")]
    assert [len(g[0]) for g in got] == [16, 2, 2]  # LRA's [:80%], [80%:90%], [90%:]
    assert np.array_equal(np.concatenate([g[0] for g in got]), images)
    assert np.array_equal(np.concatenate([g[1] for g in got]), labels)
    tokens, lab = lra.load_task("pathfinder", "val", path=tmp_path).tensors
    assert tokens.shape == (2, 256) and np.array_equal(tokens.numpy() - 2, images[16:18].reshape(2, -1))
    (tmp_path / "imgs" / "0" / "sample_17.png").write_bytes(b"")  # S4 skips one such empty file in the release
    with pytest.raises(ValueError, match="sample_17.png: unreadable Pathfinder image"):
        pathfinder.read_lra_folder(tmp_path, "val")
    (tmp_path / "metadata" / "1.npy").write_text("imgs/0 sample_0.png 0 maybe\n")
    with pytest.raises(ValueError, match=r"1.npy:1: expected 'subpath filename idx label"):
        pathfinder.read_lra_folder(tmp_path, "train")
