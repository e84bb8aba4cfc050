"""``gatedrnn generate``: samples from a trained run, as its task generates: text streamed from
a language model, a MIDI file from a music model, a GIF from a video model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gatedrnn.cli.errors import positive_int, run_errors
from gatedrnn.cli.run_options import add_run_options

EXAMPLES = """examples:
  gatedrnn generate runs/shakespeare --prompt "ROMEO:" --length 500 --temperature 0.8 --top-k 40 --seed 1
  gatedrnn generate runs/ptb --prompt "the company said" --length 50
  gatedrnn generate runs/jsb --length 128 --out chorale.mid     # a music run: a MIDI file
  gatedrnn generate runs/video --out clip.gif --seed 3           # a video run: test sequence 3 as a GIF
"""


def add_parser(sub):
    p = sub.add_parser("generate", help="sample text, music or video from a trained run", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--prompt", default="\n", help="text to start from (default a newline)")
    p.add_argument("--length", type=positive_int, default=500, help="tokens to sample (default 500)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (default 0: all)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", type=Path, help="music runs: the MIDI file to write (default RUN_DIR/sample.mid); "
                   "video runs: the GIF (default RUN_DIR/clip.gif)")
    add_run_options(p, data=True)
    p.set_defaults(run=run)
    return p


@run_errors
def run(args) -> int:
    from gatedrnn import checkpoint, runs

    if args.temperature <= 0:
        raise ValueError(f"--temperature must be positive, got {args.temperature}")
    if args.top_k < 0:
        raise ValueError(f"--top-k must be 0 or positive, got {args.top_k}")
    config = runs.load_config(args.run_dir, args.trust_edited)
    cls = runs.task_class(config, args.run_dir, args.task)
    if not cls.defines("generate"):
        raise ValueError(f"{args.run_dir} holds a {config.task} run; generate samples from runs of tasks that "
                         "generate (text, music and video runs)")  # fmt: skip
    if cls.generate_needs_data:  # it reads the data, so it checks the data is the one it was trained on
        config.data = runs.data_to_read(config, args.run_dir, args.data)
        task, model = runs.build(config, args.run_dir, args.task)
        checkpoint.load_model(args.run_dir, model, expect=runs.identity(config))
    else:  # from what the run saved alone
        task, _, read_data = runs.restore(config, args.run_dir, args.task)
        model = task.make_model(config)
        checkpoint.load_model(args.run_dir, model, expect=runs.identity(config, data=read_data))
    with config.mixed_precision(model):  # in the run's precision
        message = task.generate(model.eval(), args.out, run_dir=Path(args.run_dir), prompt=args.prompt,
                                length=args.length, temperature=args.temperature, top_k=args.top_k, seed=args.seed,
                                stream=sys.stdout)  # fmt: skip
    if message:
        print(message)
    return 0
