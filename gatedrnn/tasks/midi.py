"""Piano rolls to MIDI files (with mido, an optional dependency)."""

from __future__ import annotations

from pathlib import Path

import torch

from gatedrnn.checkpoint import atomic_write

LOWEST_NOTE = 21  # key 0 of an 88-key roll is A0, MIDI note 21


def write_midi(roll: torch.Tensor, path, ticks_per_step: int = 240, velocity: int = 80) -> Path:
    """Writes a (T, 88) binary roll as a one-track MIDI file; returns its path."""
    try:
        import mido
    except ImportError:
        raise RuntimeError("writing MIDI needs mido: pip install mido (or gatedrnn[tasks])") from None
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    previous = torch.zeros(roll.shape[1], dtype=torch.bool)
    wait = 0
    for frame in torch.cat([roll.bool(), torch.zeros(1, roll.shape[1], dtype=torch.bool)]):
        for key in torch.nonzero(previous & ~frame).flatten().tolist():
            track.append(mido.Message("note_off", note=LOWEST_NOTE + key, velocity=0, time=wait))
            wait = 0
        for key in torch.nonzero(frame & ~previous).flatten().tolist():
            track.append(mido.Message("note_on", note=LOWEST_NOTE + key, velocity=velocity, time=wait))
            wait = 0
        previous = frame
        wait += ticks_per_step
    path = Path(path)
    atomic_write(path, lambda tmp: midi.save(tmp))
    return path
