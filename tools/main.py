#!/usr/bin/env python
"""The one entry point.

    python tools/main.py <command> <config.yaml> --backend {torch,paddle} [KEY VALUE ...]

Commands: train, search, test, infer, convert, parity, bench, info.  ``<command> --help`` explains each.
Backends are imported only when a command needs one, so ``--backend paddle`` works without torch
installed and the reverse.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

# Paddle warns about a missing ccache on import; it only matters for building C++ extensions.
warnings.filterwarnings("ignore", message="No ccache found")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from common.errors import one_line  # noqa: E402
from tools import commands  # noqa: E402  (needs ROOT on sys.path)

DESCRIPTIONS = {
    "train": "train a network from a config (Cream child-net retraining, PNASNet fine-tuning, ...)",
    "search": "run an architecture search (PC-DARTS, the Cream supernet with its prioritized board, NCP through a trained predictor)",
    "test": "evaluate weights on a validation set: top-1 / top-5 and a results file",
    "infer": "run a network on image files or an .npy NCHW batch; writes logits .npy and top-5 JSON",
    "convert": "convert checkpoints between TensorFlow, PyTorch, Paddle, upstream formats and the neutral format",
    "parity": "run the same weights and batches through both backends and report the differences",
    "bench": "measure throughput and peak memory of both backends side by side",
    "info": "print the network: parameters, MACs at the configured input size, genotype / path / code",
    "plot": "draw the metrics.csv curves of one or more run folders into one PNG (one subplot per metric)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/main.py",
        description="TwinNAS: NAS systems on PyTorch and PaddlePaddle from one spec.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Trailing KEY VALUE pairs override config keys, e.g. TRAIN.EPOCHS 3 DATA.ROOT /data/imagenet",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True
    for name, help_text in DESCRIPTIONS.items():
        if name == "plot":  # takes run folders, not a config: no overrides, backend or --output
            p = sub.add_parser(name, help=help_text, description=help_text)
            p.set_defaults(overrides=[])
            commands.add_plot_arguments(p)
            continue
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog="Trailing KEY VALUE pairs override config keys.")
        config_required = name not in ("convert", "parity")  # parity --all runs the whole suite
        p.add_argument("config", nargs=None if config_required else "?", help="YAML config file")
        p.add_argument("overrides", nargs="*", metavar="KEY VALUE", help="config overrides")
        if name != "parity":
            p.add_argument("--backend", choices=("torch", "paddle"), default="torch",
                           help="framework that runs the command (default: torch)")
        p.add_argument("--output", default="", help="run folder (default: OUTPUT_DIR or runs/<config name>)")
        getattr(commands, f"add_{name}_arguments", lambda _p: None)(p)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    # KEY VALUE overrides may follow options (`train cfg.yaml --backend paddle TRAIN.EPOCHS 3`); argparse
    # leaves those as extras, which are overrides unless they look like options.
    args, extras = parser.parse_known_args(argv)
    unknown = [item for item in extras if item.startswith("--")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = list(args.overrides) + list(extras)
    try:
        return int(getattr(commands, f"run_{args.command}")(args) or 0)
    except commands.UserError as exc:  # one line, whatever the message (a YAML error spans several)
        print("error: " + one_line(str(exc)), file=sys.stderr)
        return 2
    except OSError as exc:  # a disk, permission or path problem the user can fix (full disk, read-only folder)
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f)
        print(f"error: {exc.strerror or exc}" + (f": {where}" if where else ""), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
