"""`convert`: official weights -> this project's .safetensors (restorer_core.loaders.convert)."""

from __future__ import annotations

import argparse


def cmd_convert(args: argparse.Namespace) -> int:
    """Delegates to restorer_core.loaders.convert (official weights -> project .safetensors)."""
    from ..loaders.convert import main as convert_main

    return int(convert_main(list(args.convert_args)) or 0)


def add_parser(sub: "argparse._SubParsersAction") -> None:
    """The `convert` sub-command (its arguments belong to the converter)."""
    c = sub.add_parser("convert", help="convert official weights to this project's .safetensors "
                       "(convert {instantrestore,osdface,auto} SOURCE OUT [--base SD21] [--dtype])",
                       add_help=False, description="Arguments are passed to restorer_core.loaders.convert.")
    c.add_argument("convert_args", nargs=argparse.REMAINDER)
    c.set_defaults(func=cmd_convert)
