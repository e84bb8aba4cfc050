"""The options every subcommand that reads a trained run shares: which task of your own it
holds, where its data is, and whether files edited since its checkpoint are meant."""

from __future__ import annotations


def add_run_options(p, task: bool = True, data: bool = False, runs: str = "run") -> None:
    """Adds ``--task`` (with ``task``), ``--data`` (with ``data``) and ``--trust-edited`` to the
    parser ``p``; ``runs`` is the word for what it reads ("run", or "runs" for the report)."""
    whose, their = ("runs'", "their") if runs == "runs" else ("run's", "its")
    if task:
        p.add_argument("--task", metavar="MODULE:CLASS", help=f"the {whose} task, where it is one of your own")
    if data:
        p.add_argument("--data", metavar="PATH",
                       help=f"the {whose} data, read instead of the path {their} config.json names (which is read "
                            "only where it lies in the data directory or the run folder)")  # fmt: skip
    p.add_argument("--trust-edited", action="store_true",
                   help=f"use the {runs} although {their} config.json, model.json or a saved file (vocab.json, "
                        f"normalization.json) changed since {their} checkpoint was written (each field is still "
                        "checked)")  # fmt: skip
