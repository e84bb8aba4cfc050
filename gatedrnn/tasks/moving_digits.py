"""Moving MNIST as Srivastava, Mansimov & Salakhutdinov (2015) defined it: 28×28 digits
bouncing inside a square canvas, each with a random start and direction and a fixed speed,
combined by the pixel-wise maximum. Generated here, deterministically, from the 5,000 MNIST
digits of ``mnist_5k.csv.gz``, split within each class in file order: the first 80% of each
class's images for training, the next 10% for validation, the last 10% for testing (the file
is sorted by label, 500 images a class: 4,000 / 500 / 500, every class in each split). Test
sequences are made of digit images never seen in training."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import torch

from gatedrnn.tasks.data import DataError

DIGIT = 28
SPLITS = {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}  # shares of each class, in file order


def load_digits(path) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits of an MNIST CSV (784 pixel columns 0-255, then the label) as (N, 28, 28)
    floats in [0, 1] and their (N,) labels; a clear error naming the file and row for
    anything else."""
    path = Path(path)
    if not str(path) or str(path) == ".":
        raise DataError("the video task needs --data PATH/mnist_5k.csv.gz (MNIST digits as CSV)")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an MNIST CSV file (e.g. mnist_5k.csv.gz)")
    try:
        with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as f:
            rows = [line for line in f.read().splitlines() if line.strip()]
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot be read as (gzipped) CSV ({error})") from None
    width = DIGIT * DIGIT + 1
    for k, line in enumerate(rows):
        if line.count(",") != width - 1:
            raise DataError(f"{path}, row {k + 1}: expected {width - 1} pixels and a label, got {line.count(',') + 1} fields")
    try:
        table = np.array(",".join(rows).split(","), dtype=np.float32).reshape(len(rows), width)
    except ValueError:
        row = next(k for k, line in enumerate(rows) if not _numeric(line))
        raise DataError(f"{path}, row {row + 1}: a value is not a number") from None
    pixels, labels = table[:, :-1], table[:, -1]
    bad = ~np.isfinite(pixels) | (pixels < 0) | (pixels > 255)
    if bad.any():
        row, column = map(int, np.argwhere(bad)[0])
        raise DataError(f"{path}, row {row + 1}, column {column + 1}: pixel {pixels[row, column]} is not in [0, 255]")
    if (labels != labels.round()).any() or labels.min() < 0 or labels.max() > 9:
        row = int(np.argmax((labels != labels.round()) | (labels < 0) | (labels > 9)))
        raise DataError(f"{path}, row {row + 1}: label {labels[row]} is not a digit 0-9")
    return torch.from_numpy(pixels / 255.0).view(-1, DIGIT, DIGIT), torch.from_numpy(labels).long()


def split_indices(labels: torch.Tensor, split: str) -> torch.Tensor:
    """The images of one split: for each class, its share ``SPLITS[split]`` in file order."""
    lo, hi = SPLITS[split]
    picked = []
    for digit in range(10):
        rows = torch.nonzero(labels == digit).flatten()
        n = len(rows)
        picked.append(rows[round(lo * n) : round(hi * n)])
    indices = torch.cat(picked)
    if not len(indices):
        raise DataError(f"the {split} split holds no digit: the file has too few images")
    return indices


def _numeric(line: str) -> bool:
    try:
        [float(v) for v in line.split(",")]
    except ValueError:
        return False
    return True


def moving_digits(digits: torch.Tensor, count: int, frames: int, size: int = 64, num_digits: int = 2,
                  generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """(count, frames, size, size) sequences in [0, 1], drawn from ``digits`` (N, 28, 28).

    Each digit starts at a uniform position with a uniform direction and moves
    0.1 × (size − 28) pixels a frame (Srivastava et al.'s step of 0.1 in units of the free
    range), reflecting off the edges.
    """
    if size < DIGIT:
        raise ValueError(f"frame_size must be at least {DIGIT} (a digit's size), got {size}")
    free = size - DIGIT  # positions run over [0, free]
    speed = 0.1 * free
    picks = torch.randint(0, len(digits), (count, num_digits), generator=generator)
    start = torch.rand(count, num_digits, 2, generator=generator) * free
    theta = torch.rand(count, num_digits, generator=generator) * 2 * math.pi
    velocity = torch.stack([torch.sin(theta), torch.cos(theta)], -1) * speed  # (count, digits, (dy, dx))
    out = torch.zeros(count, frames, size, size)
    position = start.clone()
    for t in range(frames):
        corners = position.round().long()
        for n in range(count):
            for d in range(num_digits):
                y, x = corners[n, d].tolist()
                patch = out[n, t, y : y + DIGIT, x : x + DIGIT]
                torch.maximum(patch, digits[picks[n, d]], out=patch)
        position = position + velocity
        low, high = position < 0, position > free  # bounce: reflect the position, reverse the velocity
        position = torch.where(low, -position, torch.where(high, 2 * free - position, position))
        velocity = torch.where(low | high, -velocity, velocity)
    return out


def to_patches(frames: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, T, S, S) frames → (B, T, p², S/p, S/p): Shi et al.'s patch trick (4×4 patches
    make a 64×64 frame a 16×16 map of 16 channels)."""
    B, T, S, _ = frames.shape
    x = frames.view(B, T, S // patch, patch, S // patch, patch)  # (B, T, h, p, w, p)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(B, T, patch * patch, S // patch, S // patch)


def from_patches(maps: torch.Tensor, patch: int) -> torch.Tensor:
    """The inverse of :func:`to_patches`: (B, T, p², h, w) → (B, T, h·p, w·p)."""
    B, T, _, h, w = maps.shape
    x = maps.reshape(B, T, patch, patch, h, w).permute(0, 1, 4, 2, 5, 3)  # (B, T, h, p, w, p)
    return x.reshape(B, T, h * patch, w * patch)
