"""The package layout the README describes: four groups whose imports run one way."""

import ast
import pathlib
import subprocess
import sys

import pytest

import dnarch_jax

PACKAGE = pathlib.Path(dnarch_jax.__file__).parent
SHARED = {"dnarch_jax.config", "dnarch_jax.precision"}
# What each group may import from outside itself (and the shared config and precision).
ALLOWED = {
  "method": {"dnarch_jax.network.conv_routes", "dnarch_jax.network.conv_flops"},
  "network": {"dnarch_jax.method"},
  "run": {"dnarch_jax.method", "dnarch_jax.network", "dnarch_jax.data",
          "dnarch_jax.interfaces.report", "dnarch_jax.interfaces.events"},
}  # fmt: skip


def _imports(path: pathlib.Path) -> set[str]:
  """Every dnarch_jax module a file imports, at the top or inside a function."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dnarch_jax"):
      found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
    elif isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.startswith("dnarch_jax")}
  return found


def _within(name: str, prefixes) -> bool:
  return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("group", sorted(ALLOWED))
def test_imports_run_from_the_method_up_to_the_interfaces(group):
  own = {f"dnarch_jax.{group}", *SHARED, *ALLOWED[group]}
  for path in sorted((PACKAGE / group).glob("*.py")):
    names = _imports(path)
    # `from dnarch_jax.method import masks` names the package and the module: the module decides.
    modules = {n for n in names if not any(m.startswith(n + ".") for m in names)}
    stray = sorted(n for n in modules if not _within(n, own))
    assert not stray, f"{path.relative_to(PACKAGE)} imports {stray}"


def test_every_public_name_loads_and_group_packages_import_nothing():
  for name in dnarch_jax.__all__:
    assert getattr(dnarch_jax, name) is not None, name
  # dnarch restarts itself on huge pages (run.hostmem) before JAX is imported: no group's
  # __init__ may import JAX on the way there.
  code = (
    "import sys; from dnarch_jax.run import hostmem; import dnarch_jax.method, dnarch_jax.network, "
    "dnarch_jax.interfaces; print('jax' in sys.modules)"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"
