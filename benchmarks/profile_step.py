"""Where one step's time goes: XLA's per-op times from a profiler trace, by op kind and by layer.

Builds ``benchmarks/step.py``'s case (default: the sMNIST CCNN-4,140 training step at its initial
crop), runs it twice to compile and warm, traces ``--steps`` more with ``jax.profiler`` (Perfetto
JSON), and sums the time of every executed HLO op per step, grouped two ways:

* ``kind``: the op's name without its number (``ynn_fusion``: XNNPACK's matmuls on XLA:CPU,
  ``fft``, ``multiply_tanh_fusion``: GELU, ``copy_bitcast_fusion``: transposes, ...);
* ``layer``: the name scope the compiled HLO's metadata gives the op (``stem``, ``block_<l>``,
  ``head``; anything else, loss and optimizer included, is ``other``), forward or backward.

Op times are wall times on the runtime's threads, so with ops running side by side they add up to
more than the step; ops that run asynchronously (XLA:CPU's plain ``dot`` thunks) record almost
nothing, and their time hides inside the others'.

Prints one JSON line for the step (``case``, ``mode``, ``step_ms``, ``op_ms``), then one per group
(``group``, ``name``, ``ms``, ``count``, ``share`` of ``op_ms``).

    python benchmarks/profile_step.py [--case smnist_4_140_crop] [--mode train] [--steps 3]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import re
import sys
import tempfile
import time

from step import CASES, build

# `%name = ... metadata={op_name="jit(step)/..."` of a top-level instruction in the compiled HLO.
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+) = .*?metadata=\{op_name="([^"]+)"')
_LAYER = re.compile(r"\b(stem|block_\d+|head)")


def scopes(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> ``"<layer> fwd|bwd"`` from its metadata."""
  out = {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if match:
      name, op_name = match.groups()
      layer = _LAYER.search(op_name)
      direction = "bwd" if "transpose(" in op_name else "fwd"
      out[name] = f"{layer.group(1) if layer else 'other'} {direction}"
  return out


def op_events(trace_dir: pathlib.Path) -> list[tuple[str, float]]:
  """``(name, microseconds)`` of every executed HLO op in the trace (runtime events left out)."""
  path = max(trace_dir.rglob("perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
  trace = json.loads(gzip.open(path).read())
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  runtime = ("$", "Thunk", "Pjit", "Slinky", "CommonPjRt", "Handle ")
  return [
    (e["name"], float(e.get("dur", 0)))
    for e in events
    if e.get("ph") == "X" and not e["name"].startswith(runtime)
  ]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--case", default="smnist_4_140_crop", choices=CASES)
  parser.add_argument("--mode", default="train", choices=["fwd", "train"])
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--top", type=int, default=15, help="groups of each kind to print")
  args = parser.parse_args()
  from dnarch_jax.run import hostmem

  hostmem.reexec_with_huge_pages([__file__, *sys.argv[1:]])  # as `dnarch` runs on the CPU

  import jax

  call, lower, *_ = build(args.case, args.mode)
  where = scopes(lower().compile().as_text())
  call()  # first call (finds the compiled step in jit's cache)
  call()  # warm
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      start = time.perf_counter()
      for _ in range(args.steps):
        call()
      step_ms = (time.perf_counter() - start) * 1e3 / args.steps
    events = op_events(pathlib.Path(tmp))

  groups = {"kind": collections.Counter(), "layer": collections.Counter()}
  counts = {"kind": collections.Counter(), "layer": collections.Counter()}
  for name, us in events:
    for group, key in (("kind", re.sub(r"\.\d+$", "", name)), ("layer", where.get(name, "?"))):
      groups[group][key] += us / 1e3 / args.steps
      counts[group][key] += 1 / args.steps
  op_ms = sum(groups["kind"].values())
  head = dict(case=args.case, mode=args.mode, step_ms=round(step_ms, 1), op_ms=round(op_ms, 1))
  print(json.dumps(head), flush=True)
  for group, totals in groups.items():
    rows = totals.most_common() if group == "layer" else totals.most_common(args.top)
    for key, ms in rows:
      share = round(ms / op_ms, 3)
      count = round(counts[group][key], 1)
      print(json.dumps(dict(group=group, name=key, ms=round(ms, 1), count=count, share=share)))


if __name__ == "__main__":
  main()
