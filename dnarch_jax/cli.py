"""The ``dnarch`` command line (also ``python -m dnarch_jax``)."""

from __future__ import annotations

import argparse
import json
import sys

from dnarch_jax.config import apply_override, load_config


def _config_overrides(unknown: list[str]) -> list[str]:
  """``--config.a.b=v`` arguments, without the prefix; anything else is an error."""
  out = []
  for arg in unknown:
    if not arg.startswith("--config."):
      raise SystemExit(f"dnarch: unrecognised argument {arg!r}")
    out.append(arg[len("--config.") :])
  return out


def cmd_summary(args, overrides) -> int:
  import jax

  from dnarch_jax.arch import initial_arch
  from dnarch_jax.experiment import run_model_config
  from dnarch_jax.model import init_variables
  from dnarch_jax.summary import format_table, summarize

  config = load_config(args.config, overrides)
  cfg = run_model_config(config)
  batch_size = int(config.data.batch_size)
  arch = initial_arch(cfg, batch_size)
  variables = init_variables(cfg, jax.random.key(int(config.get("seed", 0))))
  summary = summarize(cfg, variables, arch, batch_size, with_xla=not args.no_xla)
  if args.json:
    print(json.dumps(summary))
  else:
    print(f"{args.config}: {cfg.ndim}D input {cfg.input_size}x{cfg.in_channels}, ", end="")
    print(f"{cfg.num_classes} classes, {cfg.head} head")
    print(format_table(summary))
  return 0


def cmd_train(args, overrides) -> int:
  from dnarch_jax import sharding
  from dnarch_jax.train import load_run_config, train

  sharding.initialize_distributed()
  sharding.enable_compilation_cache()
  if args.config:
    config = load_config(args.config, overrides)
  else:
    config = load_run_config(args.workdir)
    for override in overrides:
      apply_override(config, override)
  result = train(config, args.workdir)
  print(json.dumps(result))
  return 0 if result["status"] == "completed" else 3


def cmd_eval(args, overrides) -> int:
  from dnarch_jax import sharding
  from dnarch_jax.train import evaluate_run

  sharding.initialize_distributed()
  sharding.enable_compilation_cache()
  print(json.dumps(evaluate_run(args.workdir, args.split, args.checkpoint)))
  return 0


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="dnarch", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("summary", help="the architecture layer by layer, with its cost")
  p.add_argument("--config", required=True, help="experiments/<task>.py[:variant]")
  p.add_argument("--json", action="store_true", help="print one JSON object")
  p.add_argument("--no-xla", action="store_true", help="skip compiling for XLA's FLOP count")
  p.set_defaults(func=cmd_summary)
  p = sub.add_parser("train", help="train (or resume) a run in a workdir")
  p.add_argument("--config", help="experiments/<task>.py[:variant]; default: the workdir's")
  p.add_argument("--workdir", required=True)
  p.set_defaults(func=cmd_train)
  p = sub.add_parser("eval", help="test metrics of a run's best checkpoint, as JSON")
  p.add_argument("--workdir", required=True)
  p.add_argument("--split", default="test", choices=["test", "validation"])
  p.add_argument("--checkpoint", default="best", choices=["best", "latest"])
  p.set_defaults(func=cmd_eval)
  args, unknown = parser.parse_known_args(argv)
  try:
    return args.func(args, _config_overrides(unknown))
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    print(f"dnarch {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
