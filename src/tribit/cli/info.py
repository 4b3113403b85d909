"""`tribit info [-m MODEL]`: the CPU, the kernel variants, and optionally a model."""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "show the CPU, the selected kernels and (with -m) a model's description"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", default=None, help="GGUF model file to describe")
    p.add_argument("--json", action="store_true", help="print JSON")


def _print_dict(d: dict[str, Any], indent: int = 0) -> None:
    for key, value in d.items():
        if isinstance(value, dict):
            print(f"{' ' * indent}{key}:")
            _print_dict(value, indent + 2)
        elif isinstance(value, list):
            print(f"{' ' * indent}{key}: {' '.join(str(v) for v in value)}")
        else:
            print(f"{' ' * indent}{key}: {value}")


def run(args: argparse.Namespace) -> int:
    """Prints system (and model) information; errors name what is missing."""
    from tribit.errors import TribitError

    try:
        from tribit.bench.kernels import system_info
    except ImportError as e:
        raise TribitError(f"the native core tribit._core is not available ({e})") from e
    try:
        out: dict[str, Any] = {"system": system_info()}
    except RuntimeError as e:  # TRIBIT_ISA names a variant that cannot run here
        raise TribitError(str(e)) from e
    if args.model:
        from pathlib import Path

        import tribit

        if not Path(args.model).is_file():
            raise TribitError(f"model file not found: {args.model}")
        model = tribit.load(args.model)
        out["model"] = model.describe()
    if args.json:
        print(json.dumps(out, indent=1, default=str))
    else:
        _print_dict(out)
    return 0
