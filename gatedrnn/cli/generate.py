"""``gatedrnn generate``: samples from a trained language model, streaming the text."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gatedrnn.cli.errors import UsageError, positive_int, run_errors

EXAMPLES = """examples:
  gatedrnn generate runs/shakespeare --prompt "ROMEO:" --length 500 --temperature 0.8 --top-k 40 --seed 1
  gatedrnn generate runs/ptb --prompt "the company said" --length 50
  gatedrnn generate runs/jsb --length 128 --out chorale.mid     # a music run: a MIDI file
  gatedrnn generate runs/video --out clip.gif --seed 3           # a video run: test sequence 3 as a GIF
"""


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="sample text from a trained language model", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--prompt", default="\n", help="text to start from (default a newline)")
    p.add_argument("--length", type=positive_int, default=500, help="tokens to sample (default 500)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (default 0: all)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", type=Path, help="music runs: the MIDI file to write (default RUN_DIR/sample.mid); "
                   "video runs: the GIF (default RUN_DIR/clip.gif)")
    p.set_defaults(run=run)


def load_language_model(run_dir: Path):
    """(config, vocabulary, model) of a text run; needs no access to its data."""
    from gatedrnn import checkpoint
    from gatedrnn.models import SequenceModel
    from gatedrnn.tasks.text import Vocabulary
    from gatedrnn.train import identity, load_config

    config = load_config(run_dir)
    if config.task != "text":
        raise UsageError(f"{run_dir} holds a {config.task} run; generate samples from text and music runs")
    vocab_path = Path(run_dir) / "vocab.json"
    if not vocab_path.exists():
        raise UsageError(f"{run_dir} has no vocab.json; was it written by gatedrnn train --task text?")
    vocab = Vocabulary.from_json(json.loads(vocab_path.read_text()))
    V = len(vocab.tokens)
    model = SequenceModel(config.cell, config.embedding_size or config.hidden_size, config.hidden_size, V,
                          config.layers, vocab_size=V, readout="all", backend=config.backend,
                          forget_bias=config.forget_bias, dropout=config.dropout,
                          tie_weights=config.tie_weights, adaptive_softmax=tuple(config.adaptive_softmax),
                          cell_options=config.cell_options())  # fmt: skip
    checkpoint.load_model(run_dir, model, expect=identity(config, data=False))  # needs no data, so checks none
    return config, vocab, model.eval()


def sample(model, vocab, prompt_ids, length, temperature=1.0, top_k=0, seed=0):
    """Yields ``length`` sampled token ids after the prompt."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        logits, state = model(prompt_ids[None], return_state=True)
        logits = logits[0, -1]
        for _ in range(length):
            scaled = logits / max(temperature, 1e-6)
            if top_k:
                kth = torch.topk(scaled, min(top_k, scaled.numel())).values[-1]
                scaled = scaled.masked_fill(scaled < kth, float("-inf"))
            token = torch.multinomial(torch.softmax(scaled, -1), 1, generator=generator)
            yield int(token)
            logits, state = model(token[None], state, return_state=True)
            logits = logits[0, -1]


def sample_music(run_dir: Path, length: int, temperature: float, seed: int):
    """A (length, 88) piano roll sampled from a music run, frame by frame from silence."""
    import torch

    from gatedrnn import checkpoint
    from gatedrnn.models import SequenceModel
    from gatedrnn.tasks.music import KEYS
    from gatedrnn.train import identity, load_config

    config = load_config(run_dir)
    model = SequenceModel(config.cell, KEYS, config.hidden_size, KEYS, config.layers, backend=config.backend,
                          forget_bias=config.forget_bias, dropout=config.dropout,
                          cell_options=config.cell_options()).eval()  # fmt: skip
    checkpoint.load_model(run_dir, model, expect=identity(config, data=False))
    generator = torch.Generator().manual_seed(seed)
    frame, state, frames = torch.zeros(1, 1, KEYS), None, []
    with torch.no_grad():
        for _ in range(length):
            logits, state = model(frame, state, return_state=True)
            frame = torch.bernoulli(torch.sigmoid(logits / temperature), generator=generator)
            frames.append(frame[0, 0])
    return torch.stack(frames)


def video_gif(run_dir: Path, out: Path, seed: int) -> Path:
    """Writes an animated GIF of test sequence number ``seed`` of a video run."""
    from gatedrnn import checkpoint
    from gatedrnn.diagnostics.video import predict, write_gif
    from gatedrnn.train import build, identity, load_config

    if out.suffix.lower() != ".gif":
        raise UsageError(f"--out must name a .gif file for a video run, got {out}")
    config = load_config(run_dir)
    task, model = build(config)
    checkpoint.load_model(run_dir, model, expect=identity(config))  # it reads the data: checks it too
    count = task.sizes["test"]
    if not 0 <= seed < count:
        raise UsageError(f"--seed picks a test sequence of a video run: 0 to {count - 1}, got {seed}")
    inputs, truth, predicted = predict(task, model, seed + 1)
    write_gif(out, inputs[seed], truth[seed], predicted[seed])
    return out


@run_errors
def run(args) -> int:
    from gatedrnn.tasks.text import EOS, tokenize
    from gatedrnn.train import load_config

    if args.temperature <= 0:
        raise UsageError(f"--temperature must be positive, got {args.temperature}")
    if args.top_k < 0:
        raise UsageError(f"--top-k must be 0 or positive, got {args.top_k}")
    if load_config(args.run_dir).task == "video":
        path = video_gif(args.run_dir, args.out or Path(args.run_dir) / "clip.gif", args.seed)
        print(f"{path}: a test sequence's input frames, then the prediction (left) beside the truth (right)")
        return 0
    if load_config(args.run_dir).task == "music":
        from gatedrnn.tasks.midi import write_midi

        roll = sample_music(args.run_dir, args.length, args.temperature, args.seed)
        try:
            path = write_midi(roll, args.out or Path(args.run_dir) / "sample.mid")
        except RuntimeError as error:
            raise UsageError(str(error)) from None
        print(f"{path}: {args.length} steps, {int(roll.sum())} notes sounding")
        return 0
    config, vocab, model = load_language_model(args.run_dir)
    tokens = tokenize(args.prompt, vocab.level) if vocab.level == "word" else list(args.prompt)
    if not tokens:
        raise UsageError("--prompt holds no token")
    for position, token in enumerate(tokens):
        if token not in vocab.index and "<unk>" not in vocab.index:
            raise UsageError(f"--prompt: {token!r} (position {position}) is not in the model's vocabulary")
    if vocab.level == "word" and tokens[-1] == EOS and not args.prompt.endswith("\n"):
        tokens = tokens[:-1]
    prompt_ids = vocab.encode(tokens, "--prompt")
    out = sys.stdout
    out.write(args.prompt)
    for token_id in sample(model, vocab, prompt_ids, args.length, args.temperature, args.top_k, args.seed):
        token = vocab.tokens[token_id]
        out.write(token if vocab.level == "char" else ("\n" if token == EOS else " " + token))
        out.flush()
    out.write("\n")
    return 0
