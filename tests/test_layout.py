"""The repository's layout: its modules form a stack with no import circle, the task-and-lock layer (data/, graders,
sandbox, files, errors) imports no torch, every import is at the top of its file (optional extras excepted), and no
file names a file that is not in the repository."""
import ast
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACKED = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split() or \
    [os.path.relpath(os.path.join(d, f), ROOT) for d, _, fs in os.walk(ROOT) for f in fs
     if "/." not in d and "runs" not in d and "__pycache__" not in d]  # (a copy outside git)
SOURCES = [f for f in TRACKED if f.endswith(".py") and not f.startswith("tests/")]
LOCAL = {f.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for f in SOURCES}
NO_TORCH = ("errors", "files", "sandbox", "graders", "data")
OPTIONAL = {"matplotlib", "matplotlib.pyplot", "transformers", "pyarrow.ipc", "gguf", "gguf.quants",
            "safetensors.numpy", "ctypes", "io", "posix", "_posixsubprocess", "numpy", "tokenizers"}


def module_of(path):
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def imports(path):
    """(top-level imports, imports inside functions) of a file, as module names."""
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    top, inner = set(), set()
    pkg = module_of(path) if path.endswith("__init__.py") else module_of(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (pkg if node.level else "") + ("." + node.module if node.module and node.level else
                                                  node.module or "")
            names = [base.lstrip(".")]
        else:
            continue
        (top if node in tree.body else inner).update(names)
    return top, inner


def test_no_import_circle_and_no_torch_below_the_model():
    graph = {}
    for f in SOURCES:
        top, _ = imports(f)
        graph[module_of(f)] = {m for m in top if m in LOCAL or m.split(".")[0] in LOCAL} - {module_of(f)}
        if module_of(f).split(".")[0] in NO_TORCH:
            assert not {m for m in top if m.split(".")[0] == "torch"}, f
            assert not graph[module_of(f)] - {m for m in LOCAL if m.split(".")[0] in NO_TORCH}, f
    state = {}

    def visit(m, path):
        if state.get(m) == "open":
            raise AssertionError("import circle: " + " -> ".join(path + [m]))
        if state.get(m) != "done":
            state[m] = "open"
            for n in graph.get(m, ()):
                visit(n if n in graph else n.split(".")[0], path + [m])
            state[m] = "done"
    for m in graph:
        visit(m, [])


def test_imports_are_at_the_top_except_optional_extras():
    for f in SOURCES:
        _, inner = imports(f)
        assert inner <= OPTIONAL, (f, inner - OPTIONAL)


WRITTEN = {"REPORT_units.md"}  # documents a script writes (report.py --units), not ones it cites


def test_no_file_names_a_document_that_is_not_in_the_repository():
    docs = {os.path.basename(f) for f in TRACKED if f.endswith(".md")} | WRITTEN
    for f in SOURCES + ["README.md"]:
        text = open(os.path.join(ROOT, f)).read()
        for ref in re.findall(r"\b([A-Za-z_]+\.md)\b", text):
            assert ref in docs, (f, ref)
        assert "/tmp/contract" not in text, f
