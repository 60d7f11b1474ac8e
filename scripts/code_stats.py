"""Size figures of the code: lines per module, long functions, long parameter lists.

Usage: ``python scripts/code_stats.py [folder ...]`` (default: automl trainers search_spaces).
Prints every module's line count (largest first), the functions over ``--max-lines`` lines
and those with over ``--max-params`` parameters (``self``/``cls`` not counted), then totals.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

DEFAULT_FOLDERS = ("automl", "trainers", "search_spaces")


def functions(tree: ast.AST) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method of a module, named ``Class.method`` where nested."""
    out: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((prefix + child.name, child))
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    walk(tree, "")
    return out


def n_params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    names += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
    return len([n for n in names if n not in ("self", "cls")])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", default=list(DEFAULT_FOLDERS))
    parser.add_argument("--max-lines", type=int, default=80)
    parser.add_argument("--max-params", type=int, default=7)
    args = parser.parse_args(argv)
    files = sorted(p for folder in args.folders for p in Path(folder).rglob("*.py"))
    sizes, long_fns, wide_fns = [], [], []
    for path in files:
        text = path.read_text(encoding="utf-8")
        sizes.append((len(text.splitlines()), str(path)))
        for name, fn in functions(ast.parse(text)):
            length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            if length > args.max_lines:
                long_fns.append((length, f"{path}:{fn.lineno} {name}"))
            if n_params(fn) > args.max_params:
                wide_fns.append((n_params(fn), f"{path}:{fn.lineno} {name}"))
    print("lines per module:")
    for n, name in sorted(sizes, reverse=True):
        print(f"  {n:5d}  {name}")
    print(f"functions over {args.max_lines} lines:")
    for n, name in sorted(long_fns, reverse=True):
        print(f"  {n:5d}  {name}")
    print(f"functions with over {args.max_params} parameters:")
    for n, name in sorted(wide_fns, reverse=True):
        print(f"  {n:5d}  {name}")
    total = sum(n for n, _ in sizes)
    print(f"total: {len(sizes)} modules, {total} lines, largest {max(sizes)[0] if sizes else 0}; "
          f"{len(long_fns)} functions over {args.max_lines} lines; "
          f"{len(wide_fns)} with over {args.max_params} parameters")


if __name__ == "__main__":
    main()
