"""Polyphonic music: next-step prediction of 88-key piano rolls with 88 independent Bernoullis.

Data: the four sets of Boulanger-Lewandowski, Bengio & Vincent (ICML 2012), JSB Chorales,
Nottingham, MuseData and Piano-midi.de, as ``.mat`` files with ``traindata``, ``validdata``
and ``testdata``, each a 1×N cell of (T × 88) binary rolls (MIDI notes 21–108). Metric: the
negative log-likelihood of the test set per time step, summed over the 88 keys and averaged
over all predicted steps (Chung et al. 2014; Bai et al. 2018). The baseline is 88 independent
Bernoullis with the training set's key frequencies, ignoring time.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from gatedrnn.tasks.base import Task, batch_generator
from gatedrnn.tasks.data import DataError, data_path
from gatedrnn.tasks.midi import write_midi

KEYS = 88
SPLITS = {"train": "traindata", "valid": "validdata", "test": "testdata"}


def load_mat(path) -> dict[str, list[torch.Tensor]]:
    path = data_path(path, "music", "a .mat file")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a .mat file")
    try:
        from scipy.io import loadmat

        mat = loadmat(str(path))
    except ImportError:
        raise DataError("the music task reads .mat files with scipy: pip install scipy") from None
    except Exception as error:  # scipy raises several types for a file that is not MATLAB
        raise DataError(f"{path}: not a readable .mat file ({error})") from None
    missing = [key for key in SPLITS.values() if key not in mat]
    if missing:
        raise DataError(f"{path}: lacks the keys {missing}; a music .mat holds traindata, validdata, testdata")
    splits = {}
    for split, key in SPLITS.items():
        rolls = [torch.as_tensor(r, dtype=torch.float32) for r in mat[key].ravel()]
        for k, roll in enumerate(rolls):
            if roll.dim() != 2 or roll.shape[1] != KEYS or roll.shape[0] < 2:
                raise DataError(f"{path}: {key}[{k}] has shape {tuple(roll.shape)}, expected (T >= 2, {KEYS})")
            odd = torch.nonzero((roll != 0) & (roll != 1))  # NaN included
            if len(odd):
                t, j = odd[0].tolist()
                raise DataError(f"{path}: {key}[{k}], row {t + 1}, key {j + 1} holds {roll[t, j].item()}; "
                                "a piano roll holds 0 or 1")  # fmt: skip
        splits[split] = rolls
    return splits


def pad(rolls: list[torch.Tensor]):
    """inputs (B, T-1, 88), targets (B, T-1, 88) padded with zeros, lengths (B,)."""
    lengths = torch.tensor([len(r) - 1 for r in rolls])
    T = int(lengths.max())
    x = torch.zeros(len(rolls), T, KEYS)
    y = torch.zeros(len(rolls), T, KEYS)
    for b, roll in enumerate(rolls):
        x[b, : len(roll) - 1] = roll[:-1]
        y[b, : len(roll) - 1] = roll[1:]
    return x, y, lengths


class Music(Task):
    """Polyphonic music (see the module's docstring): negative log-likelihood per step.

    Args:
        data (str): a ``.mat`` file of piano rolls (``traindata``, ``validdata``, ``testdata``).
        crop (int): the longest training excerpt, in time steps. Default: ``200``.
    """
    name = "music"
    about = "polyphonic music: predict the next piano-roll frame (JSB chorales, Nottingham, ...)"
    input_size = KEYS
    output_size = KEYS
    readout = "all"
    metric = "nll"
    lower_is_better = True
    options = {"crop": (int, 200, "music task: longest training excerpt, in time steps")}

    def __init__(self, data, crop=200):
        if crop < 2:
            raise ValueError(f"--crop must be at least 2, got {crop}")
        self.rolls, self.crop = load_mat(data), crop
        frames = torch.cat(self.rolls["train"])
        p = frames.mean(0).clamp(1e-6, 1 - 1e-6)
        test = torch.cat([r[1:] for r in self.rolls["test"]])
        self.baseline = float(-(test * p.log() + (1 - test) * (1 - p).log()).sum(1).mean())

    def introduction(self):
        pieces = {split: len(rolls) for split, rolls in self.rolls.items()}
        return [f"Polyphonic music: at every step of a piano roll the model predicts which of the {KEYS} keys sound at "
                f"the next step, each key a yes-or-no (Bernoulli) output. Training reads excerpts of at most "
                f"{self.crop} steps from {pieces['train']} pieces.",
                f"The metric is the NLL: the negative log-likelihood of the next step in nats, summed over the {KEYS} "
                f"keys and averaged over every predicted step of the {pieces['test']} test pieces.",
                f"The baseline {self.baseline:.2f} is {KEYS} independent Bernoullis with the training pieces' key "
                "frequencies, blind to time: the gap below it is what the model gains from the music so far. There "
                "is no 'solved' bar: lower is better."]  # fmt: skip

    def train_batch(self, step, batch_size, seed):
        g = batch_generator(seed, step)
        train = self.rolls["train"]
        picks = torch.randint(0, len(train), (batch_size,), generator=g).tolist()
        excerpts = []
        for k in picks:  # a random excerpt of at most `crop` + 1 frames
            roll = train[k]
            start = int(torch.randint(0, max(1, len(roll) - self.crop), (1,), generator=g))
            excerpts.append(roll[start : start + self.crop + 1])
        x, y, lengths = pad(excerpts)
        return (x, lengths), (y, lengths)

    def split(self, name, seed):
        x, y, lengths = pad(self.rolls[name])
        return (x, lengths), (y, lengths)

    def diagnostic_batch(self, seed, size=64):
        """The first test pieces, all cut to the shortest one's length (no padding)."""
        rolls = self.rolls["test"][:size]
        T = min(len(r) for r in rolls)
        x, y, lengths = pad([r[:T] for r in rolls])
        return x, (y, lengths)

    def forward(self, model, inputs):
        x, lengths = inputs
        return model(x, lengths=lengths)

    def loss(self, output, target):
        y, lengths = target
        valid = (torch.arange(y.shape[1], device=y.device)[None, :] < lengths[:, None].to(y.device))  # (B, T)
        nll = F.binary_cross_entropy_with_logits(output, y, reduction="none").sum(-1)  # (B, T)
        return (nll * valid).sum() / valid.sum()

    def loss_weight(self, target):
        y, lengths = target
        return float(lengths.clamp(max=y.shape[1]).sum())  # the valid frames `loss` averages over

    def metrics(self, output, target):
        return {"nll": self.loss(output, target).item()}

    @torch.no_grad()
    def evaluate(self, model, split, seed, device="cpu", batch_size: int = 16):
        """NLL per step over every step of every piece of the split."""
        was_training = model.training
        model.eval()
        total, steps = 0.0, 0
        rolls = self.rolls[split]
        for i in range(0, len(rolls), batch_size):
            x, y, lengths = pad(rolls[i : i + batch_size])
            output = model(x.to(device), lengths=lengths.to(device))
            total += self.loss(output.cpu(), (y, lengths)).item() * int(lengths.sum())
            steps += int(lengths.sum())
        model.train(was_training)
        return {"nll": total / steps}

    def generate(self, model, out, *, run_dir, prompt="\n", length=500, temperature=1.0, top_k=0, seed=0,
                 stream=None):  # fmt: skip
        """Writes a MIDI file (``out``, default ``RUN_DIR/sample.mid``) of ``length`` piano-roll
        frames sampled from silence, each key drawn on its own (Bernoulli) at ``temperature``."""
        roll = sample_roll(model, length, temperature, seed)
        try:
            path = write_midi(roll, out or Path(run_dir) / "sample.mid")
        except RuntimeError as error:  # mido is not installed
            raise ValueError(str(error)) from None
        return f"{path}: {length} steps, {int(roll.sum())} notes sounding"


@torch.no_grad()
def sample_roll(model, length: int, temperature: float, seed: int) -> torch.Tensor:
    """A (length, 88) piano roll sampled from a music model, frame by frame from silence."""
    generator = torch.Generator().manual_seed(seed)
    frame, state, frames = torch.zeros(1, 1, KEYS), None, []
    for _ in range(length):
        logits, state = model(frame, state, return_state=True)
        frame = torch.bernoulli(torch.sigmoid(logits / temperature), generator=generator)
        frames.append(frame[0, 0])
    return torch.stack(frames)
