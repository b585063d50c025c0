"""The layout of the repo: common/ imports form no circle; each training script names its docs page."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import ROOT, run_script

from common import config

COMMON = ROOT / "common"


def common_imports(path: Path, modules: set[str]) -> set[str]:
    """The other common/ modules a file imports, at the top, in functions or under TYPE_CHECKING alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("common.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .x import y
                base = node.module.split(".")[0] if node.module else None
            else:
                base = node.module.split(".")[1] if node.module and node.module.startswith("common.") else None
            if base:
                found.add(base)
            elif node.module == "common" or (node.level and not node.module):
                found |= {a.name for a in node.names if a.name in modules}  # from common import data, plots
    return found & modules - {path.stem}


def import_graph() -> dict[str, set[str]]:
    """Each common/ module -> the common/ modules it imports."""
    files = {p.stem: p for p in COMMON.glob("*.py") if p.stem != "__init__"}
    return {name: common_imports(path, set(files)) for name, path in sorted(files.items())}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None when the graph is acyclic."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once finished

    def visit(node: str, path: list[str]) -> list[str] | None:  # path: from the start down to node
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in graph:
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_find_cycle_finds_a_circle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_sees_imports_in_functions_and_type_checking_blocks(tmp_path):
    src = tmp_path / "x.py"
    src.write_text(
        "from typing import TYPE_CHECKING\nfrom common import data, FAIL\nimport common.plots\n"
        "if TYPE_CHECKING:\n    from common.celeba import Source\n"
        "def f():\n    from common.batches import Batches\n    from common import x\n"
    )
    assert common_imports(src, {"data", "plots", "celeba", "batches", "x"}) == {"data", "plots", "celeba", "batches"}


def test_common_modules_import_no_circle():
    graph = import_graph()
    assert {"data", "batches", "celeba", "image_cache", "run"} <= set(graph)  # the parser saw the files
    assert "batches" in graph["data"] and "config" in graph["run"]  # ... and their imports
    cycle = find_cycle(graph)
    assert cycle is None, "import circle in common/: " + " -> ".join(f"{m}.py" for m in cycle)


# --- docs pages -----------------------------------------------------------------------------------

SCRIPTS = ("VAE-MNIST.py", "GAN-MNIST.py", "DCGAN-MNIST.py", "CDCGAN-MNIST.py", "DCGAN-CelebA.py")


def test_every_training_script_has_a_docs_page():
    assert set(config.DOCS) == set(SCRIPTS)
    assert len(set(config.DOCS.values())) == len(SCRIPTS)  # one page each
    assert all(re.fullmatch(r"docs/[a-z0-9-]+\.md", page) for page in config.DOCS.values())


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_ends_with_the_docs_page_named_in_the_docstring(script):
    result = run_script(script, "--help")
    assert result.returncode == 0, result.stderr
    page = config.DOCS[script]
    assert result.stdout.rstrip("\n").splitlines()[-1] == f"docs: {page}"
    docstring = ast.get_docstring(ast.parse((ROOT / script).read_text()))
    named = re.findall(r"^Docs: (\S+)", docstring, re.MULTILINE)
    assert named == [page], f"{script}'s docstring should say 'Docs: {page}' once, it names {named}"


def test_help_of_a_script_without_a_page_has_no_docs_line(tmp_path):
    tool = tmp_path / "tool.py"
    tool.write_text('"""A tool."""\n\nEPOCHS = 1  # passes\n')
    text = config.help_text({"__doc__": "A tool.", "__file__": str(tool), "EPOCHS": 1})
    assert "docs:" not in text and text.splitlines()[-1] == "  --epochs=1  passes"


SCRIPTS = ("VAE-MNIST.py", "GAN-MNIST.py", "DCGAN-MNIST.py", "CDCGAN-MNIST.py", "DCGAN-CelebA.py")
SHARED_GROUPS = ("run", "speed", "evaluation")  # the lines every script has, repeated on purpose: --help reads them
# a line of a shared group that may differ, and why
OWN_LINES = {
    "OUT_DIR": "names the script's own folder",
    ("GAN-MNIST.py", "AMP"): "off for the MLPs, measured (docs/speed.md)",
    ("DCGAN-CelebA.py", "EVAL_SAMPLES"): "the Inception FID at the end, not the per-epoch scores",
}


def shared_lines(script: str) -> dict[str, str]:
    """NAME -> its whole line, for the constants of the run, speed and evaluation groups of a script."""
    lines, group = {}, None
    for line in (ROOT / script).read_text().splitlines():
        if line.startswith("# --- "):
            group = line.removeprefix("# --- ").split(" ")[0]
        elif not line.strip():  # the constants block ends at its first blank line
            group = None
        elif group in SHARED_GROUPS and (m := re.match(r"([A-Z_]+)(: .+?)? = ", line)):  # NAME: Domain = value
            lines[m[1]] = line
    return lines


def test_the_constant_lines_every_script_shares_are_the_same_everywhere():
    found = {script: shared_lines(script) for script in SCRIPTS}
    names = {name for lines in found.values() for name in lines}
    for name in sorted(names):
        if name in OWN_LINES:
            continue
        versions = {lines[name] for script, lines in found.items() if name in lines and (script, name) not in OWN_LINES}
        assert len(versions) == 1, f"{name} differs between the scripts:\n" + "\n".join(sorted(versions))
    assert {"SEED", "DEVICE", "RESUME", "AMP", "EVAL_SAMPLES"} <= names  # the groups were found
