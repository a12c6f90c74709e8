"""The code's shape: modules a newcomer can hold, short functions, no hidden imports.

These are the limits issue #31 set; a change that breaks one should split the module or the
function rather than raise the limit. (Lint, `ruff check`, runs in `make test` itself.)
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ndlib"
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 100
LARGE_BY_DESIGN = {"layers.py"}  # the layer math and its autograd functions read best in one file


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body, its docstring excluded."""
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return 0
    return body[-1].end_lineno - body[0].lineno + 1


def test_no_module_is_over_the_size_limit():
    sizes = {path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines()) for path in modules()}
    too_long = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES and Path(name).name not in LARGE_BY_DESIGN}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {too_long}"


def test_no_function_body_is_over_the_size_limit():
    long_functions = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > MAX_FUNCTION_LINES:
                long_functions.append(f"{path.relative_to(ROOT).as_posix()}:{node.lineno} {node.name} "
                                      f"({body_lines(node)} lines)")
    assert not long_functions, f"function bodies over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_the_size_check_counts_a_body_without_its_docstring():
    source = 'def f():\n    """doc\n    more doc"""\n    a = 1\n    return a\n'
    assert body_lines(ast.parse(source).body[0]) == 2


def test_no_module_imports_through_importlib():
    """Dependencies are imports a reader (and a linter) can see, not names resolved at run time."""
    users = [path.relative_to(ROOT).as_posix() for path in modules()
             if "import_module(" in path.read_text() or "find_spec(" in path.read_text()]
    assert not users, f"modules that import by name through importlib: {users}"
