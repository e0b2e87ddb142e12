"""The README's library example runs as written."""

import pathlib
import re


def test_readme_library_example_runs():
  readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
  assert blocks, "the README lost its Python example"
  for code in blocks:
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
