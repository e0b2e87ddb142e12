"""The ``dnarch`` command line (also ``python -m dnarch_jax``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from dnarch_jax.config import apply_override, load_config


def strict_json(value: Any) -> Any:
  """`value` with every non-finite float (a NaN loss, an infinite cost) replaced by None, so the
  JSON the commands print is strict (`json.dumps` would write NaN, which JSON parsers refuse)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {key: strict_json(item) for key, item in value.items()}
  if isinstance(value, list | tuple):
    return [strict_json(item) for item in value]
  return value


def print_json(value: Any) -> None:
  """Prints `value` as one line of strict JSON; every command's JSON goes through here."""
  print(json.dumps(strict_json(value), allow_nan=False))


def _config_overrides(unknown: list[str]) -> list[str]:
  """``--config.a.b=v`` arguments, without the prefix; anything else is an error."""
  out = []
  for arg in unknown:
    if not arg.startswith("--config."):
      raise ValueError(f"unrecognised argument {arg!r} (settings are --config.KEY=VALUE)")
    out.append(arg[len("--config.") :])
  return out


def cmd_summary(args, overrides) -> int:
  from dnarch_jax.run.methods import method_of, method_of_run

  if args.workdir:
    if overrides:
      raise ValueError(f"summary --workdir takes no --config overrides (got {overrides})")
    describe = method_of_run(args.workdir).load("describe_run")
    summary, text = describe(args.workdir, args.checkpoint, with_xla=not args.no_xla)
  else:
    config = load_config(args.config, overrides)
    describe = method_of(config).load("describe_config")
    summary, text = describe(config, with_xla=not args.no_xla)
    text = f"{args.config}: {text}"
  if args.json:
    print_json(summary)
  else:
    print(text)
  return 0


def cmd_train(args, overrides) -> int:
  from dnarch_jax.run import sharding
  from dnarch_jax.run.loop import load_run_config
  from dnarch_jax.run.methods import method_of

  sharding.initialize_distributed()
  sharding.enable_compilation_cache()
  if args.config:
    config = load_config(args.config, overrides)
  else:
    config = load_run_config(args.workdir)
    for override in overrides:
      apply_override(config, override)
  result = method_of(config).load("train")(config, args.workdir, args.allow_config_change)
  print_json(result)
  return 0 if result["status"] == "completed" else 3


def cmd_eval(args, overrides) -> int:
  from dnarch_jax.run import sharding
  from dnarch_jax.run.evaluate import parse_input_size
  from dnarch_jax.run.methods import method_of_run

  input_size = None if args.input_size is None else parse_input_size(args.input_size)
  sharding.initialize_distributed()
  sharding.enable_compilation_cache()
  evaluate_run = method_of_run(args.workdir).load("evaluate_run")
  print_json(evaluate_run(args.workdir, args.split, args.checkpoint, input_size))
  return 0


def cmd_export(args, overrides) -> int:
  from dnarch_jax.interfaces.export import export_run
  from dnarch_jax.run import sharding
  from dnarch_jax.run.evaluate import parse_input_size

  if overrides:
    raise ValueError(f"export takes no --config overrides (got {overrides}); it uses the run's")
  input_size = None if args.input_size is None else parse_input_size(args.input_size)
  sharding.enable_compilation_cache()
  with_xla = not args.no_xla
  print_json(export_run(args.workdir, args.out, args.checkpoint, with_xla, input_size))
  return 0


def cmd_predict(args, overrides) -> int:
  import numpy as np

  from dnarch_jax.interfaces import exported
  from dnarch_jax.run import sharding

  if overrides:
    raise ValueError(f"predict takes no --config overrides (got {overrides})")
  # Everything that can be wrong with the files is checked before anything compiles.
  spec, _ = exported.read_spec(args.model)
  x = exported.load_input(args.input, spec)
  if args.batch_size < 1:
    raise ValueError(f"--batch-size: must be positive, got {args.batch_size}")
  sharding.enable_compilation_cache()
  model, variables = exported.load_exported(args.model)
  logits = exported.predict_logits(model, variables, x, args.batch_size)
  classes = np.argmax(logits, axis=-1).astype(np.int32)
  if args.output is None:
    print_json({"predictions": classes.tolist()})
    return 0
  out, logits_out = exported.prediction_paths(args.output)
  out.parent.mkdir(parents=True, exist_ok=True)
  np.save(out, classes)
  np.save(logits_out, logits)
  print_json({"predictions": str(out), "logits": str(logits_out), "examples": len(x)})
  return 0


OVERRIDES_HELP = """\
overrides:  --config.KEY=VALUE sets any field of the config (e.g. --config.total_steps=2000,
            --config.budget.fraction=0.25); an unknown key or a value out of range is an error.
"""
EXIT_HELP = """\
exit status: 0 done, 2 bad input or a failed run (one line on stderr, no checkpoint lost),
            3 stopped by SIGTERM or SIGINT after saving.
"""
TRAIN_EPILOG = f"""\
{OVERRIDES_HELP}resume:     rerunning with a workdir that holds checkpoints resumes from the newest
            readable one (bit-identical to an uninterrupted run), with the settings the run
            started with (--config may be left out). Only total_steps, log_every, eval_every,
            checkpoint_every, keep_last and progress may differ; another model or data is
            refused, other changes need --allow_config_change (recorded in the workdir's
            config_changes.jsonl). One process at a time trains in a workdir.
signals:    SIGTERM or SIGINT (Ctrl-C) saves a checkpoint at the current step and exits;
            rerun to resume.
{EXIT_HELP}"""
READ_EPILOG = f"""\
checkpoints: best (highest validation accuracy) or latest; a corrupt one is skipped with a
            warning naming its step, and the newest readable one is read instead.
{EXIT_HELP}"""


def main(argv: list[str] | None = None) -> int:
  """The ``dnarch`` program (``argv=None``: the command line, on huge pages for XLA:CPU's step
  buffers, ``hostmem.reexec_with_huge_pages``) or one command in this process (a list)."""
  if argv is None:
    from dnarch_jax.run import hostmem

    hostmem.reexec_with_huge_pages(["-m", "dnarch_jax", *sys.argv[1:]])
  parser = argparse.ArgumentParser(prog="dnarch", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)

  def add(name: str, help: str, epilog: str):
    return sub.add_parser(
      name, help=help, description=help, epilog=epilog,
      formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip

  p = add("summary", "the architecture layer by layer, with its cost", OVERRIDES_HELP + READ_EPILOG)
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--config", help="experiments/<task>.py[:variant]: its initial architecture")
  source.add_argument("--workdir", help="a run's workdir: the architecture it discovered")
  p.add_argument("--checkpoint", default="best", choices=["best", "latest"], help="with --workdir")
  p.add_argument("--json", action="store_true", help="print one JSON object")
  p.add_argument("--no-xla", action="store_true", help="skip compiling for XLA's FLOP count")
  p.set_defaults(func=cmd_summary)
  p = add("train", "train (or resume) a run in a workdir", TRAIN_EPILOG)
  p.add_argument("--config", help="experiments/<task>.py[:variant]; default: the workdir's")
  p.add_argument(
    "--workdir", required=True,
    help="the run's folder: config.json, metrics.jsonl, arch.jsonl, checkpoints/, report/",
  )  # fmt: skip
  p.add_argument(
    "--allow_config_change", action="store_true",
    help="resume the workdir's run with changed settings (model and data excepted)",
  )  # fmt: skip
  p.set_defaults(func=cmd_train)
  p = add("eval", "test metrics of a run's best checkpoint, as JSON", READ_EPILOG)
  p.add_argument("--workdir", required=True, help="a run's workdir (written by dnarch train)")
  p.add_argument("--split", default="test", choices=["test", "validation"])
  p.add_argument("--checkpoint", default="best", choices=["best", "latest"])
  p.add_argument(
    "--input_size", metavar="H,W",
    help="run the trained network on inputs resized to this size (L for sequences): its "
    "continuous kernels sampled on the new grid (dnarch_jax.method.arch.arch_at_input_size)",
  )  # fmt: skip
  p.set_defaults(func=cmd_eval)
  p = add("export", "the discovered network as a plain fixed-shape Flax model", READ_EPILOG)
  p.add_argument("--workdir", required=True, help="a run's workdir (written by dnarch train)")
  p.add_argument(
    "--out", required=True, help="folder for model.json, variables.msgpack and model.jax_export"
  )
  p.add_argument("--checkpoint", default="best", choices=["best", "latest"])
  p.add_argument("--no-xla", action="store_true", help="skip compiling for XLA's FLOP count")
  p.add_argument(
    "--input_size", metavar="H,W",
    help="run the trained network on inputs resized to this size (L for sequences): its "
    "continuous kernels sampled on the new grid (dnarch_jax.method.arch.arch_at_input_size)",
  )  # fmt: skip
  p.set_defaults(func=cmd_export)
  p = add("predict", "classes (and logits) of an exported model on a .npy batch", EXIT_HELP)
  p.add_argument("--model", required=True, help="the folder dnarch export wrote")
  p.add_argument("--input", required=True, help="FILE.npy, float [batch, *spatial, channels]")
  p.add_argument(
    "--output",
    help="FILE.npy for the predicted classes (logits go to FILE.logits.npy); default: print them",
  )
  p.add_argument("--batch-size", type=int, default=256, help="examples per forward pass")
  p.set_defaults(func=cmd_predict)
  args, unknown = parser.parse_known_args(argv)
  try:
    return args.func(args, _config_overrides(unknown))
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    print(f"dnarch {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
