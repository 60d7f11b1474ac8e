"""Print size figures of Python modules: lines per module, long functions, long signatures.

For each folder or file given (default: ``automl trainers search_spaces``), prints every
module's line count (largest first), then the functions longer than ``--max-lines`` lines
and those with more than ``--max-params`` parameters (``self`` and ``cls`` not counted).
Run from the repository root:

    .venv/bin/python scripts/code_stats.py automl/report automl/dashboard.py --max-lines 80
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterator
from pathlib import Path

DEFAULT_PATHS = ("automl", "trainers", "search_spaces")


def modules(paths: list[str]) -> list[Path]:
    """The ``.py`` files under the given folders (or the files themselves), sorted."""
    found: set[Path] = set()
    for p in map(Path, paths):
        found.update(p.rglob("*.py") if p.is_dir() else [p] if p.suffix == ".py" else [])
    return sorted(found)


Function = ast.FunctionDef | ast.AsyncFunctionDef


def functions(tree: ast.AST) -> Iterator[tuple[str, Function]]:
    """Every function and method in a module with its qualified name."""
    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, Function]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield prefix + child.name, child
                yield from walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def n_params(fn: Function) -> int:
    """Parameters of a function, ``*args``/``**kwargs`` included, ``self``/``cls`` not."""
    a = fn.args
    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
    return len([n for n in names if n not in ("self", "cls")])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=list(DEFAULT_PATHS))
    parser.add_argument("--max-lines", type=int, default=80)
    parser.add_argument("--max-params", type=int, default=7)
    args = parser.parse_args(argv)
    sizes, long_fns, wide_fns = [], [], []
    for path in modules(args.paths):
        text = path.read_text(encoding="utf-8")
        sizes.append((len(text.splitlines()), str(path)))
        for name, fn in functions(ast.parse(text, filename=str(path))):
            length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            if length > args.max_lines:
                long_fns.append((length, f"{path}:{fn.lineno} {name}"))
            if n_params(fn) > args.max_params:
                wide_fns.append((n_params(fn), f"{path}:{fn.lineno} {name}"))
    print(f"lines per module ({len(sizes)} modules, {sum(n for n, _ in sizes)} lines):")
    for n, name in sorted(sizes, reverse=True):
        print(f"  {n:5d}  {name}")
    print(f"functions over {args.max_lines} lines: {len(long_fns)}")
    for n, name in sorted(long_fns, reverse=True):
        print(f"  {n:5d}  {name}")
    print(f"functions with over {args.max_params} parameters: {len(wide_fns)}")
    for n, name in sorted(wide_fns, reverse=True):
        print(f"  {n:5d}  {name}")


if __name__ == "__main__":
    main()
