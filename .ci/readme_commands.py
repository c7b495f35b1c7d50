"""Print one of the two commands README.md opens with: `main` or `test`.

CI runs README's test command verbatim, so the README cannot drift from what CI checks.
"""
import pathlib
import re
import sys

text = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S)
if len(blocks) < 2:
    sys.exit("README.md must open with two fenced command blocks (main job, tests)")
which = sys.argv[1] if len(sys.argv) > 1 else "test"
print({"main": blocks[0], "test": blocks[1]}[which].strip())
