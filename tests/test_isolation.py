"""The isolation rules, enforced: common/ imports no framework; each backend tree imports only its own;
``--backend paddle`` runs with torch unimportable, and the reverse.  The layering rules: common/ imports none of
the layers above it (weights_tools, tools, bench, parity_tests), bench/ does not import tools/, and weights_tools/
imports frameworks only inside functions (docs/CONVENTIONS.md)."""
import ast
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = {"torch", "torchvision", "paddle", "tensorflow", "tf_slim", "timm"}


def imported_top_modules(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0], node.lineno


def python_files(folder):
    for base, _, files in os.walk(os.path.join(ROOT, folder)):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(base, name)


@pytest.mark.parametrize("folder, forbidden", [
    ("common", FRAMEWORKS),
    ("torch_impl", {"paddle", "tensorflow", "tf_slim"}),
    ("paddle_impl", {"torch", "torchvision", "tensorflow", "tf_slim", "timm"}),
])
def test_static_imports(folder, forbidden):
    """No import statement anywhere in the tree (module level or inside functions) names a forbidden framework."""
    leaks = [f"{os.path.relpath(path, ROOT)}:{line} imports {mod}"
             for path in python_files(folder) for mod, line in imported_top_modules(path) if mod in forbidden]
    assert not leaks, "\n".join(leaks)


def module_level_imports(path):
    """``(top-level module, line)`` of every import that runs when the module is imported: the module body, its
    ``if`` / ``try`` blocks and class bodies, not function bodies (those run only when called)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    stack = list(ast.iter_child_nodes(tree))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0], node.lineno
        stack.extend(ast.iter_child_nodes(node))


LAYERS = {"weights_tools", "tools", "bench", "parity_tests"}


@pytest.mark.parametrize("folder, forbidden", [
    ("common", LAYERS),         # common/ is the bottom layer: the registry names the others by module path only
    ("bench", {"tools"}),       # UserError comes from common.errors
])
def test_layering(folder, forbidden):
    """No import statement anywhere in the tree (module level or inside functions) names a layer above it."""
    leaks = [f"{os.path.relpath(path, ROOT)}:{line} imports {mod}"
             for path in python_files(folder) for mod, line in imported_top_modules(path) if mod in forbidden]
    assert not leaks, "\n".join(leaks)


def test_weights_tools_imports_frameworks_only_inside_functions():
    """weights_tools/ reads and writes foreign checkpoints with numpy; a framework (TF above all: it segfaults when
    imported before paddle or torchvision) may only be imported inside the function that needs it."""
    leaks = [f"{os.path.relpath(path, ROOT)}:{line} imports {mod} at module level"
             for path in python_files("weights_tools") for mod, line in module_level_imports(path) if mod in FRAMEWORKS]
    assert not leaks, "\n".join(leaks)


def test_module_level_import_scan_sees_blocks_but_not_functions(tmp_path):
    """The scan itself: imports under ``try`` / ``if`` / a class body count, imports inside functions do not."""
    path = tmp_path / "probe.py"
    path.write_text(textwrap.dedent("""
        import numpy
        try:
            import torch
        except ImportError:
            torch = None
        if True:
            from paddle import nn
        class Holder:
            import timm
        def lazy():
            import tensorflow
            return tensorflow
        lam = lambda: __import__("tf_slim")
    """))
    assert sorted(mod for mod, _ in module_level_imports(str(path))) == ["numpy", "paddle", "timm", "torch"]


def test_family_registry_names_code_that_exists():
    """common/families.py names other layers by module path only; every path and function it names exists (a
    renamed module or importer fails here, not in the middle of a user's conversion)."""
    import importlib.util

    from common import families

    built = families.available_families()
    assert {"cream", "pnasnet"} <= set(built)
    for entry in families.REGISTRY:
        if entry.name not in built:
            assert not entry.importers and entry.bench is None, entry.name  # nothing wired to an unbuilt family
            continue
        assert importlib.util.find_spec(entry.bench) is not None, entry.bench
        spec = families.spec_module(entry.name)
        assert callable(getattr(spec, entry.recognise)), (entry.name, entry.recognise)
        for imp in entry.importers:
            assert callable(families.resolve(imp.target)), imp.target
    formats = families.import_formats()
    assert len(set(formats)) == len(formats) and {"cream-pth", "tf"} <= set(formats)


def test_importing_all_of_common_loads_no_framework():
    code = textwrap.dedent("""
        import importlib, pkgutil, sys
        import common
        for info in pkgutil.walk_packages(common.__path__, "common."):
            importlib.import_module(info.name)
        loaded = sorted(m for m in ("torch", "paddle", "tensorflow", "torchvision") if m in sys.modules)
        print("LOADED", loaded)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout


def run_without(framework, args, tmp_path):
    """Run tools/main.py with ``framework`` made unimportable (a shadow package that raises ImportError)."""
    shadow = tmp_path / "shadow"
    (shadow / framework).mkdir(parents=True)
    (shadow / framework / "__init__.py").write_text(f"raise ImportError('{framework} is blocked for this test')\n")
    env = dict(os.environ, PYTHONPATH=str(shadow))
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "main.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("backend, blocked", [("paddle", "torch"), ("torch", "paddle")])
def test_backend_runs_with_the_other_framework_absent(backend, blocked, tmp_path):
    out = run_without(blocked, ["info", "configs/cream14.yaml", "--backend", backend], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "matches the spec" in out.stdout


def test_missing_framework_is_a_clear_error(tmp_path):
    out = run_without("paddle", ["info", "configs/cream14.yaml", "--backend", "paddle"], tmp_path)
    assert out.returncode == 2
    assert "requirements-paddle.txt" in out.stderr
