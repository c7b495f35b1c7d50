"""The documentation cannot go stale: the commands in README.md and docs/*.md, and the README's results.

Every fenced shell command that runs one of the project's scripts (`python train.py`,
`python evaluate.py`, `python benchmarks/*.py`, `python datasets/*.py`, `python -m
synergyseg.<x>`, the `synergyseg-<x>` console scripts of setup.cfg) is parsed by that script's own
argparse parser: each flag must be one the parser defines, spelled out (no abbreviation), and the
whole argument list must parse (choices, types, required arguments); each `--preset NAME` must be
in `synergyseg.training.config.PRESETS`. The parsers are taken from the scripts themselves, in one
subprocess (this file run as a script): each script is run with `ArgumentParser.parse_known_args`
stubbed to hand its parser back, so no script does any work.

Every number in README.md's results table must equal, at the precision shown, the value that the
table's hidden source lines (an HTML comment under it) read from the committed results files. Every
python block parses, and every relative link reaches a file.
"""

import argparse
import configparser
import contextlib
import importlib
import io
import json
import math
import pathlib
import re
import runpy
import shlex
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOC_FILES = [README, ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = ("", "bash", "sh", "shell", "console")
# A fenced block, possibly indented (inside a list item): its language and its text.
FENCE = re.compile(r"^[ \t]*(```+)([\w+-]*)[ \t]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
CONTROL_OPERATORS = ("&&", "||", ";", "|")
RESULTS_HEADING = "## Results"
SOURCES_MARKER = "<!-- tests/test_docs.py checks each number above"


# ---------------------------------------------------------------------------------------------
# Extraction (plain text; runs at collection time without TensorFlow).

def fenced_blocks(text):
    """`(language, text)` of every fenced block, indentation removed."""
    return [(language, "\n".join(line.strip() for line in body.splitlines()))
            for _, language, body in FENCE.findall(text)]


def shell_commands(block):
    """The simple commands of a shell block: continuation lines joined, comments dropped, split
    at `&&`, `||`, `;` and `|`. Each is `(text, tokens)`."""
    joined = re.sub(r"\\\n", " ", block)
    for line in joined.splitlines():
        tokens = shlex.split(line, comments=True)
        start = 0
        for i, token in enumerate(tokens + [";"]):
            if token in CONTROL_OPERATORS:
                if i > start:
                    yield shlex.join(tokens[start:i]), tokens[start:i]
                start = i + 1


def console_scripts():
    """setup.cfg's console scripts: `{name: "module:function"}`."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines if line.strip())


def our_target(tokens):
    """`((kind, target), arguments)` when `tokens` run one of our scripts, else None."""
    while tokens and re.fullmatch(r"[A-Za-z_]\w*=.*", tokens[0]):  # VAR=value prefixes
        tokens = tokens[1:]
    if not tokens:
        return None
    head = tokens[0]
    if head in ("python", "python3"):
        if len(tokens) > 2 and tokens[1] == "-m":
            if tokens[2].split(".")[0] == "synergyseg":
                return ("module", tokens[2]), tokens[3:]
            return None  # pip, pytest: not ours
        if len(tokens) > 1 and tokens[1].endswith(".py"):
            return ("script", tokens[1]), tokens[2:]
        return None  # python -c ...
    if head.startswith("synergyseg-"):
        return ("console", head), tokens[1:]
    return None


def doc_commands():
    """Every command of ours in the docs: dicts with doc, text, kind, target, args."""
    found = []
    for path in DOC_FILES:
        for language, block in fenced_blocks(path.read_text()):
            if language not in SHELL_LANGUAGES:
                continue
            for text, tokens in shell_commands(block):
                target = our_target(tokens)
                if target is not None:
                    (kind, name), args = target
                    found.append({"doc": path.relative_to(ROOT).as_posix(), "text": text,
                                  "kind": kind, "target": name, "args": args})
    return found


COMMANDS = doc_commands()


# ---------------------------------------------------------------------------------------------
# The parser side: this file run as a script, in its own process (TensorFlow loads once there,
# and nothing the scripts import or set leaks into the test process).

class _Captured(Exception):
    def __init__(self, parser):
        super().__init__("parser captured")
        self.parser = parser


def _capture_parser(kind, target):
    """The argparse parser `target` builds, taken at its first parse, before it does any work."""
    original = argparse.ArgumentParser.parse_known_args

    def stub(self, *args, **kwargs):
        raise _Captured(self)

    argparse.ArgumentParser.parse_known_args = stub
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    try:
        sys.argv = [target]
        if kind == "script":
            path = ROOT / target
            if not path.is_file():
                raise FileNotFoundError(f"no script {target} in the repository")
            sys.path.insert(0, str(path.parent))
            runpy.run_path(str(path), run_name="__main__")
        elif kind == "module":
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            scripts = console_scripts()
            if target not in scripts:
                raise LookupError(f"{target} is not a console script of setup.cfg ({sorted(scripts)})")
            module, function = scripts[target].split(":")
            getattr(importlib.import_module(module), function)()
    except _Captured as captured:
        return captured.parser
    except SystemExit as e:
        raise RuntimeError(f"{target} exited ({e.code}) before parsing its arguments") from None
    finally:
        argparse.ArgumentParser.parse_known_args = original
        sys.argv, sys.path[:] = saved_argv, saved_path
    raise RuntimeError(f"{target} finished without parsing any arguments")


def _check_arguments(parser, args):
    """Problems of `args` for `parser`: flags it does not define, then argparse's own error."""
    problems = []
    for arg in args:
        if arg == "--":
            break
        if arg.startswith("-") and not re.fullmatch(r"-\d.*", arg):
            flag = arg.split("=", 1)[0]
            if flag not in parser._option_string_actions:
                problems.append(f"{flag} is not an option of {parser.prog}")
    if problems or any(arg in ("-h", "--help") for arg in args):
        return problems
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(args)
    except SystemExit as e:
        if e.code not in (0, None):
            problems.append(stderr.getvalue().strip().splitlines()[-1])
    return problems


def _parse_all(commands):
    """For each command: the problems its arguments have; and the preset names."""
    sys.path.insert(0, str(ROOT))
    parsers, results = {}, []
    for command in commands:
        key = (command["kind"], command["target"])
        if key not in parsers:
            try:
                parsers[key] = _capture_parser(*key)
            except Exception as e:  # reported per command below
                parsers[key] = f"{type(e).__name__}: {e}"
        parser = parsers[key]
        results.append([parser] if isinstance(parser, str) else _check_arguments(parser, command["args"]))
    from synergyseg.training.config import PRESETS

    return {"problems": results, "presets": sorted(PRESETS)}


if __name__ == "__main__":
    print(json.dumps(_parse_all(json.load(sys.stdin))))
    sys.exit(0)


# ---------------------------------------------------------------------------------------------
# The tests.

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def parsed():
    """Runs every command's arguments through its parser, in one subprocess."""
    result = subprocess.run([sys.executable, __file__], input=json.dumps(COMMANDS), cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_docs_hold_the_commands_they_document():
    # The extraction finds what the pages are about (it cannot silently match nothing).
    targets = {(c["kind"], c["target"]) for c in COMMANDS}
    for expected in [("script", "train.py"), ("script", "evaluate.py"), ("script", "datasets/cityscapes.py"),
                     ("script", "datasets/mapillary.py"), ("module", "synergyseg.export"),
                     ("module", "synergyseg.predict"), ("console", "synergyseg-predict")]:
        assert expected in targets, f"no fenced command runs {expected[1]}"
    assert any(c["target"].startswith("benchmarks/") for c in COMMANDS)
    # The README's first command, the main job, is among them, joined and split as a shell would.
    assert {"doc": "README.md", "text": "python train.py", "kind": "script", "target": "train.py",
            "args": []} in COMMANDS


def test_shell_commands_join_continuations_and_split_at_operators():
    block = ('pip install -e . && python train.py --epochs 2   # a comment\n'
             'python -m synergyseg.export runs/x --out e \\\n'
             '    --calibration "data/x/val-*.tfrecord"\n')
    assert [tokens for _, tokens in shell_commands(block)] == [
        ["pip", "install", "-e", "."], ["python", "train.py", "--epochs", "2"],
        ["python", "-m", "synergyseg.export", "runs/x", "--out", "e", "--calibration", "data/x/val-*.tfrecord"]]


@pytest.mark.parametrize("index", range(len(COMMANDS)),
                         ids=[f"{c['doc']}: {c['text'][:80]}" for c in COMMANDS])
def test_command_is_accepted_by_its_parser(parsed, index):
    command = COMMANDS[index]
    problems = parsed["problems"][index]
    assert not problems, f"{command['doc']}: `{command['text']}`: " + "; ".join(problems)
    args = command["args"]
    for i, arg in enumerate(args):
        name = arg.split("=", 1)[1] if arg.startswith("--preset=") else (
            args[i + 1] if arg == "--preset" and i + 1 < len(args) else None)
        if name is not None:
            assert name in parsed["presets"], (
                f"{command['doc']}: `{command['text']}`: preset {name!r} is not in PRESETS")


@pytest.mark.parametrize("path", DOC_FILES, ids=[p.relative_to(ROOT).as_posix() for p in DOC_FILES])
def test_python_blocks_are_valid_python(path):
    import ast

    for language, block in fenced_blocks(path.read_text()):
        if language == "python":
            ast.parse(block)


@pytest.mark.parametrize("path", DOC_FILES, ids=[p.relative_to(ROOT).as_posix() for p in DOC_FILES])
def test_relative_links_reach_files(path):
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file = (path.parent / target.split("#")[0]).resolve()
        assert file.exists(), f"{path.relative_to(ROOT)} links to {target}, which does not exist"


# ---------------------------------------------------------------------------------------------
# The README's results table against its results files.

def _table(lines):
    """`(header cells, rows of cells)` of the markdown table starting at `lines[0]`."""
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[0], [row for row in rows[2:]]


def _results_section(text):
    start = text.index(RESULTS_HEADING)
    end = text.find("\n## ", start + len(RESULTS_HEADING))
    return text[start:end if end != -1 else len(text)]


def _sources(section):
    """The hidden source lines: dicts with row, column, file, path, scale."""
    start = section.index(SOURCES_MARKER)
    comment = section[start:section.index("-->", start)]
    lines = [line.strip() for line in comment.splitlines()[1:] if line.strip()]
    assert lines[0] == "row | column | file | JSON path | scale", lines[0]
    keys = ("row", "column", "file", "path", "scale")
    return [dict(zip(keys, (part.strip() for part in line.split("|")), strict=True)) for line in lines[1:]]


def _select(value, path, where):
    """The value at `path` ("a/b/{key=value,key=value}/c", "a/0": a list's first item) in parsed JSON `value`."""
    for step in re.findall(r"\{[^}]*\}|[^/]+", path):
        if isinstance(value, list) and step.isdigit():
            assert int(step) < len(value), f"{where}: no item {step} in a list of {len(value)}"
            value = value[int(step)]
        elif step.startswith("{"):
            wanted = dict(pair.split("=", 1) for pair in step[1:-1].split(","))
            matches = [item for item in value
                       if all(str(item.get(k)) == v for k, v in wanted.items())]
            assert len(matches) == 1, f"{where}: {step} matches {len(matches)} entries, expected 1"
            value = matches[0]
        else:
            assert step in value, f"{where}: no key {step!r} (keys: {sorted(value)})"
            value = value[step]
    return value


def _scaled(value, scale):
    if scale.endswith("/"):
        return float(scale[:-1]) / value
    return value * float(scale)


NUMBER = re.compile(r"-?\d+(\.\d+)?")


def test_readme_results_table_equals_its_results_files():
    section = _results_section(README.read_text())
    lines = section.splitlines()
    header, rows = _table(lines[next(i for i, line in enumerate(lines) if line.startswith("|")):])
    sources = _sources(section)
    visible = section[:section.index(SOURCES_MARKER)] + section[section.index("-->"):]
    checked = set()
    for source in sources:
        where = f"README results, {source['row']} / {source['column']}"
        matching = [r for r, row in enumerate(rows) if source["row"] in row[0]]
        assert len(matching) == 1, f"{where}: {len(matching)} table rows name {source['row']!r}"
        assert source["column"] in header, f"{where}: no column {source['column']!r} in {header}"
        r, c = matching[0], header.index(source["column"])
        cell = rows[r][c]
        assert NUMBER.fullmatch(cell), f"{where}: cell {cell!r} is not a number"
        assert source["file"] in visible, f"{where}: the table's caption does not name {source['file']}"
        path = ROOT / source["file"]
        assert path.is_file(), f"{where}: {source['file']} does not exist"
        value = _select(json.loads(path.read_text()), source["path"], f"{where}, {source['file']}")
        expected = _scaled(float(value), source["scale"])
        decimals = len(cell.split(".")[1]) if "." in cell else 0
        assert math.isfinite(expected)
        assert f"{expected:.{decimals}f}" == cell, (
            f"{where}: the table says {cell}, {source['file']} gives {expected:.{decimals + 3}f}")
        checked.add((r, c))
    # No number in the table goes unchecked.
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            if NUMBER.fullmatch(cell):
                assert (r, c) in checked, f"README results: {row[0]} / {header[c]} = {cell} has no source line"


def test_readme_option_table_is_the_rules_table():
    """The README's table of real-time options is realtime_choice.md's, row for row."""
    choice = (ROOT / "benchmarks" / "results" / "realtime_choice.md").read_text()
    rule_rows = [line for line in choice.splitlines() if line.startswith("| realtime-")]
    readme_rows = [line for line in _results_section(README.read_text()).splitlines()
                   if line.startswith("| realtime-")]
    assert len(rule_rows) == 16
    assert readme_rows == rule_rows


def _study_cells(regime):
    """{variant: (mIoU cell, minus-single cell)} of a committed fusion study table."""
    lines = (ROOT / "benchmarks" / "results" / f"fusion_study_{regime}" / "table.md").read_text().splitlines()

    def column(start, index):
        first = next(i for i, line in enumerate(lines) if line.startswith(start))
        _, rows = _table(lines[first:])
        return {row[0]: row[index] for row in rows}

    miou, paired = column("| trained with | seeds", 2), column("| trained with | - single", 1)
    return {variant: (miou[variant], paired.get(variant, "")) for variant in miou}


def test_readme_fusion_study_table_is_the_studys_tables():
    """Each README cell of the fusion study equals the committed table.md of its regime."""
    section = _results_section(README.read_text())
    lines = section.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| trained with |"))
    header, rows = _table(lines[first:])
    assert len(header) == 5 and len(rows) == 6
    synthetic, large = _study_cells("synthetic"), _study_cells("large")
    for row in rows:
        variant = re.match(r"`(\w+)`", row[0]).group(1)
        assert tuple(row[1:3]) == synthetic[variant], row
        assert tuple(row[3:5]) == large[variant], row


def test_readme_real_time_recipe_numbers_are_the_committed_pairs():
    # The README's "per-scale losses on the real-time presets" sentence quotes realtime_presets_aux.json.
    results = json.loads((ROOT / "benchmarks" / "results" / "realtime_presets_aux.json").read_text())
    summary = {(row["option"], row["aux_loss_weight"]): row["final_mean_iou"] for row in results["summary"]}
    text = " ".join(README.read_text().split())
    for pair in results["paired"]:
        with_aux = summary[(pair["preset"], 0.4)]
        without = summary[(pair["aux_0_option"], 0.0)]
        mean, std = pair["difference_mean_std"]
        assert all(d > 0 for d in pair["difference"]), pair  # "ahead in each seed"
        quoted = (f"`{pair['preset']}` {with_aux[0]:.1f} ± {with_aux[1]:.1f} against "
                  f"{without[0]:.1f} ± {without[1]:.1f} ({mean:+.1f} ± {std:.1f}, ahead in each seed)")
        assert quoted in text, quoted
