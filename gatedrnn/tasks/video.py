"""Next-frame prediction on moving digits (video): the model sees ``frames_in`` frames of two
bouncing digits and predicts the next ``frames_out`` (10 → 10 at 64×64, Srivastava et al.
2015's Moving MNIST protocol; data from :mod:`gatedrnn.tasks.moving_digits`).

The model is Shi et al. (2015)'s encoder–forecaster: an encoder ConvLSTM (or ConvGRU) reads the
input frames; a forecaster of the same shape starts from the encoder's states and runs
``frames_out`` steps, each fed the frame it predicted before (the last input frame first);
a 1×1 convolution of all forecaster layers' states gives each predicted frame's logits.
With ``--cell lstm`` or ``gru`` the same layout runs on flattened frames: the FC-LSTM that
Srivastava et al. and Shi et al. compare against. Frames go through Shi et al.'s patch trick
(``--patch 4``: a 64×64 frame is a 16×16 map of 16 channels).

Loss: per-pixel binary cross-entropy. Metrics per predicted frame, averaged: ``mse``, the
squared error summed over the frame's pixels (as the papers report it), ``bce`` likewise
summed, and ``ssim``; with the same numbers for two baselines on the same sequences:
copying the last input frame, and the mean training frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gatedrnn.conv import ConvGRU, ConvLSTM
from gatedrnn.diagnostics import video
from gatedrnn.layers import GRU, LSTM
from gatedrnn.tasks.base import Task, batch_generator
from gatedrnn.tasks.data import DataError
from gatedrnn.tasks.moving_digits import from_patches, load_digits, moving_digits, split_indices, to_patches
from gatedrnn.tasks.prediction import Prediction

CONV_CELLS = {"convlstm": ConvLSTM, "convgru": ConvGRU}
FC_CELLS = {"lstm": LSTM, "gru": GRU}


class Forecaster(nn.Module):
    """Encoder–forecaster over (B, T, C, h, w) patch maps; ``forward`` returns the logits of
    the next ``frames_out`` maps, (B, frames_out, C, h, w)."""

    def __init__(self, cell: str, channels: int, map_size: int, hidden_size: int, num_layers: int,
                 kernel_size: int, frames_out: int, backend: str = "auto", cell_options: dict | None = None):  # fmt: skip
        super().__init__()
        if cell not in CONV_CELLS and cell not in FC_CELLS:
            raise ValueError(f"--cell for the video task must be one of {', '.join([*CONV_CELLS, *FC_CELLS])}, "
                             f"got {cell!r}")  # fmt: skip
        self.cell, self.frames_out = cell, frames_out
        self.conv = cell in CONV_CELLS
        self.shape = (channels, map_size, map_size)
        if self.conv:
            kw = {"forget_bias": 1.0} if cell == "convlstm" else {}
            make = lambda: CONV_CELLS[cell](channels, hidden_size, kernel_size, num_layers, batch_first=True, **kw)  # noqa: E731
            self.head = nn.Conv2d(hidden_size * num_layers, channels, 1)  # Shi et al.: 1x1 over all layers' states
        else:
            features = channels * map_size * map_size
            kw = ({"forget_bias": 1.0} if cell == "lstm" else {}) | (cell_options or {})  # variants
            make = lambda: FC_CELLS[cell](features, hidden_size, num_layers, batch_first=True, backend=backend, **kw)  # noqa: E731
            self.head = nn.Linear(hidden_size * num_layers, features)
        self.encoder, self.forecaster = make(), make()

    def _read(self, x):
        return x if self.conv else x.flatten(2)  # FC: (B, T, C*h*w)

    def forward(self, frames, return_trace=False):
        """frames (B, T_in, C, h, w) → logits (B, frames_out, C, h, w); with ``return_trace``
        also the encoder's trace."""
        result = self.encoder(self._read(frames), return_trace=return_trace)
        state = result[1]
        x = frames[:, -1:]  # (B, 1, C, h, w): the last frame seen
        logits = []
        for _ in range(self.frames_out):
            _, state = self.forecaster(self._read(x), state)
            h = state[0] if isinstance(state, tuple) else state  # (L, B, C_h, h, w) or (L, B, H)
            logit = self.head(h.transpose(0, 1).flatten(1, 2))  # all layers' states → one frame
            logit = logit.view(logit.shape[0], *self.shape)  # (B, C, h, w)
            logits.append(logit)
            x = torch.sigmoid(logit)[:, None]  # the prediction is the next input
        out = torch.stack(logits, 1)  # (B, frames_out, C, h, w)
        return (out, result[2]) if return_trace else out


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity of (N, S, S) images in [0, 1], one value per image (Wang et al.
    2004: an 11×11 Gaussian window of σ 1.5, C1 = 0.01², C2 = 0.03²)."""
    coords = torch.arange(window, dtype=a.dtype) - window // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]  # (1, 1, k, k)
    a, b = a[:, None], b[:, None]

    def blur(x):
        return F.conv2d(x, kernel)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return value.mean((1, 2, 3))


def frame_metrics(predicted: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per predicted frame (averaged over sequences), frames (N, T, S, S) in [0, 1]: MSE and
    binary cross-entropy summed over the frame's pixels, SSIM."""
    N, T = target.shape[:2]
    p = predicted.clamp(1e-7, 1 - 1e-7)
    return {
        "mse": ((predicted - target) ** 2).sum((2, 3)).mean(0),  # (T,)
        "bce": -(target * p.log() + (1 - target) * (1 - p).log()).sum((2, 3)).mean(0),
        "ssim": ssim(predicted.flatten(0, 1), target.flatten(0, 1)).view(N, T).mean(0),
    }


class Video(Task):
    """Next-frame prediction on moving digits (see the module's docstring): MSE, SSIM.

    Args:
        data (str): the MNIST CSV the digits are drawn from.
        frames_in (int): frames the model sees. Default: ``10``.
        frames_out (int): frames it predicts. Default: ``10``.
        frame_size (int): frame height and width in pixels. Default: ``64``.
        digits (int): digits per sequence. Default: ``2``.
        patch (int): patch size ``p``: a frame becomes a map of ``p*p`` channels.
            Default: ``4``.
        kernel_size (int): the ConvLSTM/ConvGRU kernel size (odd). Default: ``5``.
        valid_size (int): validation sequences. Default: ``256``.
        test_size (int): test sequences. Default: ``512``.
    """
    name = "video"
    about = "predict the next frames of moving digits (Moving MNIST) with a ConvLSTM or ConvGRU"
    generate_needs_data = True  # generate draws a test sequence
    prediction_formats = ("gif", "npy", "csv", "json")  # FramesPrediction
    readout = "all"
    metric = "mse"
    lower_is_better = True
    cells = (*CONV_CELLS, *FC_CELLS)
    options = {
        "frames_in": (int, 10, "video: frames the model sees"),
        "frames_out": (int, 10, "video: frames it predicts"),
        "frame_size": (int, 64, "video: frame height and width in pixels"),
        "digits": (int, 2, "video: digits per sequence"),
        "patch": (int, 4, "video: patch size p (a frame becomes a map of p*p channels)"),
        "kernel_size": (int, 5, "video: convolution kernel size of the ConvLSTM/ConvGRU (odd)"),
        "valid_size": (int, 256, "video: validation sequences"),
        "test_size": (int, 512, "video: test sequences"),
    }

    def __init__(self, data: str, frames_in=10, frames_out=10, frame_size=64, digits=2, patch=4, kernel_size=5,
                 valid_size=256, test_size=512):  # fmt: skip
        for name, value in (("frames-in", frames_in), ("frames-out", frames_out), ("digits", digits),
                            ("patch", patch), ("valid-size", valid_size), ("test-size", test_size)):  # fmt: skip
            if value < 1:
                raise ValueError(f"--{name} must be positive, got {value}")
        if frame_size % patch:
            raise ValueError(f"--frame-size {frame_size} must be a multiple of --patch {patch}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"--kernel-size must be odd and positive, got {kernel_size}")
        images, labels = load_digits(data)
        self.digits = {name: images[split_indices(labels, name)] for name in ("train", "valid", "test")}
        self.frames_in, self.frames_out, self.frame_size = frames_in, frames_out, frame_size
        self.num_digits, self.patch, self.kernel_size = digits, patch, kernel_size
        self.sizes = {"valid": valid_size, "test": test_size}
        self.input_size = self.output_size = patch * patch
        self._splits = {}
        self.baseline = self.baselines("valid")["copy last frame"]["mse"].mean().item()

    def introduction(self):
        S, digits = self.frame_size, f"{self.num_digits} digit{'s' if self.num_digits > 1 else ''}"
        return [f"Next-frame prediction: the model sees {self.frames_in} frames of {digits} moving in a {S}×{S} "
                f"frame and predicts the next {self.frames_out}, each predicted frame fed back as the next input.",
                f"The metric is the MSE of a predicted frame: its squared error summed over the {S * S} pixels, "
                "averaged over the predicted frames (as Srivastava et al. and Shi et al. report it); SSIM and the "
                "binary cross-entropy are reported too.",
                f"The baseline {self.baseline:.1f} is copying the last input frame (validation MSE); the mean training "
                "frame is scored beside it. There is no 'solved' bar: lower is better."]  # fmt: skip

    def _sequences(self, split: str, count: int, generator) -> torch.Tensor:
        frames = self.frames_in + self.frames_out
        return moving_digits(self.digits[split], count, frames, self.frame_size, self.num_digits, generator)

    def _pair(self, sequences):
        maps = to_patches(sequences, self.patch)  # (B, T, p², h, w)
        return maps[:, : self.frames_in], maps[:, self.frames_in :]

    def make_model(self, config):
        return Forecaster(config.cell, self.patch**2, self.frame_size // self.patch, config.hidden_size,
                          config.layers, self.kernel_size, self.frames_out, config.backend,
                          config.cell_options())  # fmt: skip

    def train_batch(self, step, batch_size, seed):
        return self._pair(self._sequences("train", batch_size, batch_generator(seed, step)))

    def split(self, name, seed):
        if name not in self._splits:  # fixed by the split alone: every run and cell sees the same
            generator = torch.Generator().manual_seed({"valid": 1, "test": 2}[name])
            self._splits[name] = self._pair(self._sequences(name, self.sizes[name], generator))
        return self._splits[name]

    def loss(self, output, target):
        return F.binary_cross_entropy_with_logits(output, target)

    def frames(self, maps: torch.Tensor) -> torch.Tensor:
        """(N, T, p², h, w) maps → (N, T, S, S) frames."""
        return from_patches(maps, self.patch)

    def per_frame(self, output, target) -> dict[str, torch.Tensor]:
        """The metrics of each predicted frame, from the model's logits."""
        return frame_metrics(self.frames(torch.sigmoid(output)), self.frames(target))

    def metrics(self, output, target):
        values = {k: v.mean().item() for k, v in self.per_frame(output, target).items()}
        values["loss"] = self.loss(output, target).item()
        return values

    @torch.no_grad()
    def evaluate(self, model, split, seed, device="cpu", batch_size=64):
        return super().evaluate(model, split, seed, device, batch_size)

    def baselines(self, split: str) -> dict[str, dict[str, torch.Tensor]]:
        """Per-frame metrics of copying the last input frame and of the mean training frame."""
        inputs, targets = self.split(split, 0)
        truth = self.frames(targets)
        last = self.frames(inputs[:, -1:]).expand_as(truth)
        train = self._sequences("train", 256, torch.Generator().manual_seed(3))
        mean = train.mean((0, 1)).expand_as(truth)
        return {"copy last frame": frame_metrics(last, truth), "mean frame": frame_metrics(mean, truth)}

    def model_spec(self):
        return {"patch": self.patch, "frame_size": self.frame_size, "kernel_size": self.kernel_size,
                "frames_out": self.frames_out}  # fmt: skip

    def diagnostic_batch(self, seed, size=64):
        return None  # the sequence figures (gradient flow, 1-D gate heatmaps) are for vector states

    def figures(self):
        return video.FIGURES

    @classmethod
    def restore(cls, config, spec, saved):
        """A video predictor as a trained run keeps it: its frame sizes (``model.json``) and how
        many frames it reads (its options)."""
        task = super().restore(config, spec, saved)
        task.frames_in = cls.option_values(config)["frames_in"]
        if not (isinstance(task.frames_in, int) and task.frames_in > 0):
            raise ValueError(f"config.json: extra.frames_in must be a positive integer, got {task.frames_in!r}")
        for key in ("patch", "frame_size", "kernel_size", "frames_out"):
            value = getattr(task, key, None)
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise ValueError(f"model.json: {key!r} must be a positive integer, got {value!r}")
        if task.frame_size % task.patch:
            raise ValueError(f"model.json: 'frame_size' ({task.frame_size}) must be a multiple of 'patch' ({task.patch})")
        return task

    @torch.no_grad()
    def predict(self, model, path, device="cpu", per_line=False):
        """The ``frames_out`` frames after the last ``frames_in`` of a clip (a .npy array
        (T, S, S) of values in [0, 1] or 0-255, or a grayscale .gif), as a
        :class:`FramesPrediction`: written as a GIF (the clip's frames, then the predicted
        ones), an .npy array of the predicted frames, or per-frame rows (CSV, JSON)."""
        clip = read_clip(path, self.frame_size)  # (T, S, S) in [0, 1]
        if len(clip) < self.frames_in:
            raise DataError(f"{path}: {len(clip)} frames; the model reads the last {self.frames_in} (the "
                            f"--frames-in it was trained with), so give at least {self.frames_in}")  # fmt: skip
        seen = clip[-self.frames_in :]
        maps = to_patches(seen[None], self.patch)  # (1, frames_in, p², h, w)
        predicted = from_patches(torch.sigmoid(model(maps.to(device)).cpu()), self.patch)[0]  # (frames_out, S, S)
        rows = [{"frame": len(clip) + k + 1, "mean": float(frame.mean()), "max": float(frame.max())}
                for k, frame in enumerate(predicted)]  # fmt: skip
        summary = {"frames in": self.frames_in, "frames out": len(predicted), "frame size": self.frame_size}
        message = (f"{path}: {len(predicted)} frames predicted after frame {len(clip)} "
                   f"(from the last {self.frames_in} of its {len(clip)})")  # fmt: skip
        return FramesPrediction(self.name, rows, summary, message, seen=seen, frames=predicted)

    def generate(self, model, out, *, run_dir, prompt="\n", length=500, temperature=1.0, top_k=0, seed=0,
                 stream=None):  # fmt: skip
        """Writes an animated GIF (``out``, default ``RUN_DIR/clip.gif``) of test sequence number
        ``seed``: its input frames, then the prediction beside the truth."""
        out = Path(out) if out is not None else Path(run_dir) / "clip.gif"
        if out.suffix.lower() != ".gif":
            raise ValueError(f"--out must name a .gif file for a video run, got {out}")
        count = self.sizes["test"]
        if not 0 <= seed < count:
            raise ValueError(f"--seed picks a test sequence of a video run: 0 to {count - 1}, got {seed}")
        inputs, truth, predicted = video.predict(self, model, seed + 1)
        video.write_gif(out, inputs[seed], truth[seed], predicted[seed])
        return f"{out}: a test sequence's input frames, then the prediction (left) beside the truth (right)"


class FramesPrediction(Prediction):
    """A video prediction: ``frames`` (T, S, S) predicted after ``seen``, the frames the model read."""

    formats = Video.prediction_formats

    def __init__(self, *args, seen: torch.Tensor, frames: torch.Tensor, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen, self.frames = seen, frames

    def write(self, path, format=None):
        """A .gif (the frames read, then the predicted), an .npy array (the predicted frames),
        or rows as CSV or JSON."""
        from gatedrnn.checkpoint import atomic_write
        from gatedrnn.tasks.prediction import output_format

        path = Path(path)
        format = format or output_format(path, self.formats)
        if format == "gif":
            video.write_gif(path, self.seen, None, self.frames)
        elif format == "npy":
            def save(tmp):
                with open(tmp, "wb") as f:
                    np.save(f, self.frames.numpy())

            atomic_write(path, save)
        else:
            return super().write(path, format)
        return path


def read_clip(path, size: int) -> torch.Tensor:
    """The frames of a .npy array (T, S, S) or a grayscale .gif as (T, S, S) floats in [0, 1];
    a one-line :class:`DataError` naming the file for anything else."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".gif":
            from PIL import Image, ImageSequence

            with Image.open(path) as image:
                array = np.stack([np.asarray(frame.convert("L")) for frame in ImageSequence.Iterator(image)])
        else:
            raise DataError(f"{path}: a clip is a .npy array (T, S, S) or a .gif, got {suffix or 'no suffix'}")
    except (OSError, ValueError, SyntaxError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{path}: cannot be read as a {suffix[1:]} clip ({error})") from None
    if array.ndim != 3 or array.shape[1:] != (size, size):
        raise DataError(f"{path}: frames of shape {tuple(array.shape)}; the model reads frames of "
                        f"{size} x {size} pixels, (T, {size}, {size})")  # fmt: skip
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise DataError(f"{path}: the frames must hold finite numbers")
    frames = torch.from_numpy(array.astype(np.float32))
    return frames / 255 if frames.max() > 1 else frames
