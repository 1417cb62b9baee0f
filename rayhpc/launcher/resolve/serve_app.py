"""Check a --serve application where the launching side can, before anything starts: a module
in the shared dir that binds no such name fails here with exit 2. A module not in the shared
dir may be in the image, and one this Python cannot parse may be of the image's newer Python:
only the head can tell (see node.endpoint)."""

from __future__ import annotations

import ast
import difflib
import sys
from pathlib import Path

from rayhpc.common.user_error import UserError
from rayhpc.launcher.resolve.driver import link_out_of

MODULE_BYTES_MAX = 4 * 1024 * 1024  # a bigger "module" is not one a person wrote: not read


def module_file(module: str, shared: Path) -> Path | None:
    """The file ``module`` imports from in the shared dir, which the deployment puts first on
    its path (None: not there, so from the image). UserError where the shared dir holds the
    module's top package but not the module: Python looks nowhere else then."""
    directory, parts = shared, module.split(".")
    for depth, part in enumerate(parts):
        last, here = depth == len(parts) - 1, "/".join(parts[:depth + 1])
        if (directory / part).is_dir():
            if last:
                init = directory / part / "__init__.py"
                return init if init.is_file() else None
            directory = directory / part
        elif (directory / f"{part}.py").is_file():
            if last:
                return directory / f"{part}.py"
            raise UserError(f"--serve {module}: {here}.py in the shared dir {shared} is a "
                            "module, not a package; fix the module path")
        elif depth and (directory / "__init__.py").is_file():
            raise UserError(f"--serve {module}: no {here}.py (nor {here}/) in the shared dir "
                            f"{shared}; fix the module path, or put the module there")
        else:
            return None  # not in the shared dir, or a namespace package: the image may have it
    return None


def top_level_names(statements: list[ast.stmt]) -> set[str] | None:
    """The names a module binds at its top level (under if/try/with/for too, not inside a
    function or class); None when its text cannot tell (`from x import *`, `__getattr__`)."""
    names: set[str] = set()
    for statement in statements:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(statement.name)
            continue
        if type(statement).__name__ == "Match":  # its patterns bind names too: not told here
            return None
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            for alias in statement.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
            continue
        for node in ast.iter_child_nodes(statement):
            if isinstance(node, (ast.stmt, ast.excepthandler)):
                inner = top_level_names([node] if isinstance(node, ast.stmt) else node.body)
                if inner is None:
                    return None
                names |= inner
            else:  # targets and expressions: every name stored there (walrus included)
                names.update(sub.id for sub in ast.walk(node)
                             if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store))
        if hasattr(statement, "handlers"):  # try / try-except*: `except E as name`
            names.update(handler.name for handler in statement.handlers if handler.name)
    return None if "__getattr__" in names else names


# Calls that can bind a module's names where its text does not show them.
DYNAMIC_BINDERS = {"globals", "vars", "exec", "setattr", "__import__"}


def names_bound_elsewhere(tree: ast.Module) -> set[str] | None:
    """Top-level names bound from inside functions (`global NAME`); None when the module may
    bind names dynamically (globals(), exec, setattr, ...)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            names.update(node.names)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in DYNAMIC_BINDERS):
            return None
    return names


def check_serve_app(serve: str, shared: Path) -> str:
    """UserError naming --serve, the file and the fix when the application's module is in the
    shared dir and is a link out of it or binds no such name. Returns a warning ("" : none)
    when this Python cannot parse it: the head's may."""
    module, _, name = serve.partition(":")
    path = module_file(module, shared)
    if path is None:
        return ""
    real = link_out_of(path, shared)
    if real is not None:
        raise UserError(f"--serve {serve}: {path} is a link to {real}, outside the shared dir "
                        f"{shared} that the nodes see; copy the module into it")
    if path.stat().st_size > MODULE_BYTES_MAX:
        return ""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    # Nesting past this parser's limits raises RecursionError or MemoryError: the same case.
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        line = f":{exc.lineno}" if getattr(exc, "lineno", None) else ""
        reason = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
        return (f"warning: --serve {serve}: {path}{line}: {reason} (this Python "
                f"{sys.version_info[0]}.{sys.version_info[1]}); launching anyway: the "
                "image's Python may read it, and the head says so if not")
    names, elsewhere = top_level_names(tree.body), names_bound_elsewhere(tree)
    if names is None or elsewhere is None or name in names | elsewhere:
        return ""
    close = difflib.get_close_matches(name, sorted(names), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise UserError(f"--serve {serve}: {path} binds no {name!r} at its top level{hint}; Ray "
                    f"Serve deploys an application bound there, e.g. `{name} = "
                    "MyDeployment.bind()`")
