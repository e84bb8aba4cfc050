"""``gatedrnn explore``: a text run's gates and states over a text, one character at a time, in
one self-contained HTML page, with the units ranked by the feature of the text they follow."""

from __future__ import annotations

import argparse
from pathlib import Path

from gatedrnn.cli.errors import UsageError, positive_int, run_errors
from gatedrnn.cli.run_options import add_run_options

EXAMPLES = """examples:
  gatedrnn explore runs/shakespeare                     # the start of the run's test split
  gatedrnn explore runs/shakespeare --text 'KING: "Peace, (I say)!"' --out king.html
  gatedrnn explore runs/shakespeare --units 64 --layer 1 --out layer1.html
"""


def add_parser(sub):
    p = sub.add_parser("explore", help="colour a text by a text run's gates, unit by unit, in an HTML page",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a folder gatedrnn train --task text wrote")
    p.add_argument("--text", help="the text to read (default: about 1000 characters of the run's test split, "
                   "when its data is readable here)")  # fmt: skip
    p.add_argument("--out", type=Path, help="the HTML file to write (default RUN_DIR/explorer.html)")
    p.add_argument("--units", type=positive_int, default=32,
                   help="the page holds this many units, those that follow a feature best (default 32)")  # fmt: skip
    p.add_argument("--layer", type=int, default=0, help="the layer to look into, counted from 0 (default 0)")
    add_run_options(p, task=False)
    p.set_defaults(run=run)
    return p


def default_text(run) -> str:
    """What the run's task gives the explorer to read from its data (the text task: about 1000
    characters of its test split)."""
    from gatedrnn import runs

    try:
        run.config.data = runs.data_to_read(run.config, run.run_dir)  # only where a run folder may point
        task, _ = runs.build(run.config, run.run_dir)  # with its data, and the vocabulary the run saved
    except (OSError, ValueError) as error:  # a DataError is a ValueError
        raise UsageError(f"no --text given, and the run's data cannot be read here ({error}); "
                         "give the text to explore with --text")  # fmt: skip
    if not hasattr(task, "explorer_text"):
        raise UsageError(f"{run.run_dir}: its task gives no text to explore; give one with --text")
    return task.explorer_text()


@run_errors
def run(args) -> int:
    from gatedrnn.diagnostics import explore
    from gatedrnn.trained import load

    run = load(args.run_dir, trust_edited=args.trust_edited)
    if run.vocab is None or run.vocab.level != "char":
        what = f"a run of the {run.task} task" if run.vocab is None else "a word-level run"
        raise UsageError(f"{args.run_dir} holds {what}; explore colours characters, so it reads character-level "
                         "language models (gatedrnn train --task text --level char)")  # fmt: skip
    text = default_text(run) if args.text is None else args.text
    out = args.out or Path(args.run_dir) / explore.FILENAME
    path = explore.write_explorer(out, run.model, run.vocab.index, text, args.units, args.layer,
                                  title=f"gate explorer: {run.config.cell} ({Path(args.run_dir).name})",
                                  source="--text" if args.text is not None else f"{run.config.data}")  # fmt: skip
    print(path)
    return 0
