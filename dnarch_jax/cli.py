"""The ``dnarch`` command line (also ``python -m dnarch_jax``)."""

from __future__ import annotations

import argparse
import json
import math
import pathlib
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
  import jax

  from dnarch_jax.arch import initial_arch
  from dnarch_jax.dnal.config import is_dnal
  from dnarch_jax.experiment import run_model_config
  from dnarch_jax.model import init_variables
  from dnarch_jax.summary import format_table, summarize

  if args.workdir:
    return _run_summary(args, overrides)
  config = load_config(args.config, overrides)
  if is_dnal(config):
    return _dnal_summary(args, config)
  cfg = run_model_config(config)
  batch_size = int(config.data.batch_size)
  arch = initial_arch(cfg, batch_size)
  variables = init_variables(cfg, jax.random.key(int(config.get("seed", 0))))
  summary = summarize(cfg, variables, arch, batch_size, with_xla=not args.no_xla)
  if args.json:
    print_json(summary)
  else:
    print(f"{args.config}: {cfg.ndim}D input {cfg.input_size}x{cfg.in_channels}, ", end="")
    print(f"{cfg.num_classes} classes, {cfg.head} head")
    print(format_table(summary))
  return 0


def _run_summary(args, overrides) -> int:
  """``dnarch summary --workdir``: the architecture a run discovered (its best checkpoint by
  default), with its cost beside the run's budget."""
  from dnarch_jax import budget as budget_lib
  from dnarch_jax.dnal.config import is_dnal
  from dnarch_jax.export import restore_run
  from dnarch_jax.summary import format_table, summarize
  from dnarch_jax.train import load_run_config

  if overrides:
    raise ValueError(f"summary --workdir takes no --config overrides (got {overrides})")
  if pathlib.Path(args.workdir).is_dir() and is_dnal(load_run_config(args.workdir)):
    return _dnal_run_summary(args)
  run = restore_run(args.workdir, args.checkpoint)
  summary = summarize(run.cfg, run.variables, run.arch, run.batch_size, with_xla=not args.no_xla)
  budget_cfg = run.config.budget
  budget = budget_lib.resolve_budget(budget_cfg, run.variables["params"], run.cfg, run.batch_size)
  summary.update(step=run.step, checkpoint=run.checkpoint, budget_metric=budget_cfg.metric)
  summary["budget"] = budget or None
  if args.json:
    print_json(summary)
    return 0
  print(f"{args.workdir}: {run.checkpoint} checkpoint, step {run.step}")
  print(format_table(summary))
  if budget:
    cost = summary["flops_model" if budget_cfg.metric == "flops" else "params"]
    print(f"budget: {budget:,.0f} {budget_cfg.metric} per example; this architecture uses "
          f"{cost / budget:.1%} of it")  # fmt: skip
  return 0


def _dnal_run_summary(args) -> int:
  """``dnarch summary --workdir`` of a DNAL run: the network its checkpoint holds (pruned once
  the architecture stage is over)."""
  from dnarch_jax.dnal.summary import format_table, summarize
  from dnarch_jax.dnal.train import restore_run

  trainer, step = restore_run(args.workdir, args.checkpoint)
  variables = {"params": trainer.state.params, "batch_stats": trainer.state.batch_stats}
  summary = summarize(trainer.cfg, variables, trainer.arch, with_xla=not args.no_xla)
  summary.update(step=step, checkpoint=args.checkpoint)
  if args.json:
    print_json(summary)
  else:
    print(f"{args.workdir}: {args.checkpoint} checkpoint, step {step}")
    print(format_table(summary))
  return 0


def _dnal_summary(args, config) -> int:
  """``dnarch summary`` of a DNAL config: the unpruned network's widths, MACs and parameters."""
  import jax

  from dnarch_jax.dnal.arch import full_arch
  from dnarch_jax.dnal.config import run_net_config
  from dnarch_jax.dnal.models import init_variables
  from dnarch_jax.dnal.summary import format_table, summarize

  cfg = run_net_config(config)
  variables = init_variables(cfg, jax.random.key(int(config.get("seed", 0))))
  summary = summarize(cfg, variables, full_arch(cfg), with_xla=not args.no_xla)
  if args.json:
    print_json(summary)
  else:
    print(f"{args.config}: DNAL {cfg.kind}, input {cfg.input_size}x{cfg.in_channels}, ", end="")
    print(f"{cfg.num_classes} classes")
    print(format_table(summary))
  return 0


def cmd_train(args, overrides) -> int:
  from dnarch_jax import sharding
  from dnarch_jax.dnal.config import is_dnal
  from dnarch_jax.train import load_run_config, train

  sharding.initialize_distributed()
  sharding.enable_compilation_cache()
  if args.config:
    config = load_config(args.config, overrides)
  else:
    config = load_run_config(args.workdir)
    for override in overrides:
      apply_override(config, override)
  if is_dnal(config):
    from dnarch_jax.dnal.train import train as dnal_train

    result = dnal_train(config, args.workdir, args.allow_config_change)
  else:
    result = train(config, args.workdir, args.allow_config_change)
  print_json(result)
  return 0 if result["status"] == "completed" else 3


def cmd_eval(args, overrides) -> int:
  from dnarch_jax import sharding
  from dnarch_jax.dnal.config import is_dnal
  from dnarch_jax.evaluate import evaluate_run, parse_input_size
  from dnarch_jax.train import load_run_config

  input_size = None if args.input_size is None else parse_input_size(args.input_size)
  sharding.initialize_distributed()
  sharding.enable_compilation_cache()
  if is_dnal(load_run_config(args.workdir)):
    from dnarch_jax.dnal.train import evaluate_run as evaluate_dnal

    if input_size is not None:
      raise ValueError("--input_size: DNAL's CNNs run at their training size only")
    print_json(evaluate_dnal(args.workdir, args.split, args.checkpoint))
    return 0
  print_json(evaluate_run(args.workdir, args.split, args.checkpoint, input_size))
  return 0


def cmd_export(args, overrides) -> int:
  from dnarch_jax import sharding
  from dnarch_jax.evaluate import parse_input_size
  from dnarch_jax.export import export_run

  if overrides:
    raise ValueError(f"export takes no --config overrides (got {overrides}); it uses the run's")
  input_size = None if args.input_size is None else parse_input_size(args.input_size)
  sharding.enable_compilation_cache()
  with_xla = not args.no_xla
  print_json(export_run(args.workdir, args.out, args.checkpoint, with_xla, input_size))
  return 0


def cmd_predict(args, overrides) -> int:
  import numpy as np

  from dnarch_jax import export, sharding

  if overrides:
    raise ValueError(f"predict takes no --config overrides (got {overrides})")
  # Everything that can be wrong with the files is checked before anything compiles.
  spec, _ = export.read_spec(args.model)
  x = export.load_input(args.input, spec)
  if args.batch_size < 1:
    raise ValueError(f"--batch-size: must be positive, got {args.batch_size}")
  sharding.enable_compilation_cache()
  model, variables = export.load_exported(args.model)
  logits = export.predict_logits(model, variables, x, args.batch_size)
  classes = np.argmax(logits, axis=-1).astype(np.int32)
  if args.output is None:
    print_json({"predictions": classes.tolist()})
    return 0
  out, logits_out = export.prediction_paths(args.output)
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
    from dnarch_jax import hostmem

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
    "continuous kernels sampled on the new grid (dnarch_jax.arch.arch_at_input_size)",
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
    "continuous kernels sampled on the new grid (dnarch_jax.arch.arch_at_input_size)",
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
