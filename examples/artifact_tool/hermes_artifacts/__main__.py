"""Command line: ``python -m hermes_artifacts build|convert ...``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import onnx

from .build import AdamWConfig, BuildOptions, ToolError, build_artifacts
from .lowering import LoweringError
from .models import MODELS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hermes_artifacts",
        description="Build portable (lowered) ONNX Runtime training artifacts for hermes-rs.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--out", required=True, type=Path, help="artifact folder to write")
        sp.add_argument("--seed", type=int, default=0, help="seed (model init, reference batch)")
        sp.add_argument("--with-reference", action="store_true", help="also write the reference/ parity fixture")
        sp.add_argument("--beta1", type=float, default=AdamWConfig.beta1)
        sp.add_argument("--beta2", type=float, default=AdamWConfig.beta2)
        sp.add_argument("--epsilon", type=float, default=AdamWConfig.epsilon)
        sp.add_argument("--weight-decay", type=float, default=AdamWConfig.weight_decay)

    b = sub.add_parser("build", help="build one of the example models")
    b.add_argument("--model", required=True, choices=sorted(MODELS))
    common(b)

    c = sub.add_parser("convert", help="make artifacts from your own exported ONNX model")
    c.add_argument("--onnx", required=True, type=Path, help="the model (outputs logits [N, C, ...])")
    c.add_argument("--label-name", default="labels", help="name of the label input to create (int64)")
    c.add_argument("--logits-name", default=None, help="model output holding the logits (default: first)")
    c.add_argument("--model-name", default=None, help="name written into the manifest (default: file stem)")
    c.add_argument("--frozen", nargs="*", default=[], help="initializers that are not trained")
    common(c)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    adamw = AdamWConfig(args.beta1, args.beta2, args.epsilon, args.weight_decay)
    try:
        if args.command == "build":
            model = MODELS[args.model](args.seed)
            opts = BuildOptions(args.model, args.out, adamw=adamw, with_reference=args.with_reference, seed=args.seed)
        else:
            if not args.onnx.is_file():
                raise ToolError(f"model file not found: {args.onnx}")
            try:
                model = onnx.load(str(args.onnx))
            except Exception as err:  # protobuf errors have no common base class
                raise ToolError(f"{args.onnx} is not a readable ONNX model: {err}") from err
            opts = BuildOptions(
                args.model_name or args.onnx.stem,
                args.out,
                label_name=args.label_name,
                logits_name=args.logits_name,
                frozen=args.frozen,
                adamw=adamw,
                with_reference=args.with_reference,
                seed=args.seed,
            )
        build_artifacts(model, opts)
    except (ToolError, LoweringError, onnx.checker.ValidationError) as err:
        print(f"hermes_artifacts: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
