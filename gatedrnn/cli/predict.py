"""``gatedrnn predict``: a trained run applied to a new file; the result as CSV or JSON (or, for
a video run, the predicted frames as a GIF or an array)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gatedrnn.cli.errors import run_errors
from gatedrnn.cli.run_options import add_run_options

EXAMPLES = """examples:
  gatedrnn predict runs/airline --input passengers.csv --out forecast.csv   # the steps after the CSV's end
  gatedrnn predict runs/digits --input sequences.csv --out labels.json      # a label per row
  gatedrnn predict runs/shakespeare --input sonnets.txt --out score.csv --per-line   # bits per character
  gatedrnn predict runs/video --input clip.npy --out next.gif               # the frames after a clip

A forecaster reads the last --window rows of the columns it was trained on (--target and
--features) and forecasts the --horizon steps it was trained for; a classifier reads rows of
values (the count it was trained on, optionally with a label column: then its accuracy is
printed); a language model scores a text file (nats per token, bits per character,
perplexity); a video model reads the frames of a clip (.npy or .gif) and predicts the next
ones. The training data is not read: the run's saved normalization is applied.
"""


def add_parser(sub):
    p = sub.add_parser("predict", help="forecast, label or score a file with a trained run", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a folder gatedrnn train wrote")
    p.add_argument("--input", type=Path, required=True, metavar="FILE",
                   help="a CSV (forecaster, classifier) or a text file (language model)")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the prediction")
    p.add_argument("--format", choices=["csv", "json", "gif", "npy"],
                   help="default: from the --out suffix (.csv or .json; video runs also .gif and .npy)")
    p.add_argument("--per-line", action="store_true", help="text runs: a row per line of the file, not just the total")
    add_run_options(p)
    p.set_defaults(run=run)
    return p


@run_errors
def run(args) -> int:
    from gatedrnn.tasks.prediction import output_format
    from gatedrnn.trained import load, predict

    run = load(args.run_dir, args.task, args.trust_edited)
    formats = run.restored_task.prediction_formats
    format = args.format or output_format(args.out, formats)  # before any work: a wrong name is found at once
    if format not in formats:
        raise ValueError(f"--format {format}: a {run.task} run's predictions are written as {', '.join(formats)}")
    if args.out.is_dir():
        raise ValueError(f"--out {args.out} is a folder; name the file to write, e.g. {args.out / ('prediction.' + format)}")
    prediction = predict(run, args.input, per_line=args.per_line)
    for note in prediction.notes:
        print(note)
    print(prediction.message)
    try:
        path = prediction.write(args.out, format)
    except OSError as error:
        raise ValueError(f"cannot write {error.filename or args.out}: {error.strerror}") from None
    print(f"wrote {path}")
    return 0
