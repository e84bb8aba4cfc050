"""``gatedrnn presets``: the named settings behind README's results tables, listed or shown."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gatedrnn.cli.errors import UsageError, run_errors
from gatedrnn.tasks.presets import ABOUT, BUILT_IN, DATA_ENV, PRESETS, resolve

EXAMPLES = f"""examples:
  gatedrnn presets                                  # one line each
  gatedrnn presets airline                          # its settings, as gatedrnn train options
  gatedrnn presets airline --json > airline.json    # a file for gatedrnn train --config
  gatedrnn presets jsb --data-dir ~/data            # data paths start at ~/data (or ${DATA_ENV})
"""


def add_parser(sub):
    p = sub.add_parser("presets", help="list the presets, or show one's settings", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("name", nargs="?", metavar="NAME", help="a preset to show (default: list them all)")
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help=f"where preset data paths start (default: ${DATA_ENV}, else ../shared/data beside the "
                        "checkout)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the settings as a JSON file for train --config")
    p.set_defaults(run=run)
    return p


def flags(settings: dict) -> list[tuple[str, str]]:
    """The ``gatedrnn train`` options that give ``settings``: (flag, value) pairs, value "" for a switch."""
    pairs = []
    for key, value in {**{k: v for k, v in settings.items() if k != "extra"}, **settings.get("extra", {})}.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            pairs.append((flag, ""))
        elif value is False:
            pairs.append(("--no-" + key.replace("_", "-"), ""))
        elif isinstance(value, (list, tuple)):
            pairs.append((flag, ",".join(map(str, value))))
        else:
            pairs.append((flag, str(value)))
    return pairs


@run_errors
def run(args) -> int:
    if args.name is None:
        if args.json:
            raise UsageError("--json shows one preset: give its NAME")
        width = max(map(len, PRESETS))
        for name, settings in PRESETS.items():
            print(f"{name.ljust(width)}  {settings['task'].ljust(10)}  {ABOUT[name]}")
        return 0
    if args.name not in PRESETS:
        raise UsageError(f"no preset {args.name!r}; the presets are {', '.join(PRESETS)}")
    settings = resolve(args.name, args.data_dir)
    if args.json:
        print(json.dumps(settings, indent=2))
        return 0
    print(f"{args.name}: {ABOUT[args.name]}")
    pairs = flags(settings)
    width = max(len(flag) for flag, _ in pairs)
    for flag, value in pairs:
        print(f"  {flag.ljust(width)}  {value}".rstrip())
    data = settings.get("data", "")
    if data and data not in BUILT_IN and not Path(data).exists():
        print(f"  ({data} is absent: point --data-dir or ${DATA_ENV} at the folder holding the data sets)")
    from gatedrnn.tasks import task_class

    cells = task_class(settings["task"]).cells
    cell = "lstm" if "lstm" in cells else cells[0]
    cell = "convlstm" if "convlstm" in cells else cell  # a video preset's model is convolutional
    print(f"train it: gatedrnn train --preset {args.name} --cell {cell} --out runs/{args.name}   "
          "(options given beside --preset override it)")
    return 0

