"""vlr uses only the public API of Lightning, Hydra and torch: a private name is a future breakage.

Checked on the source of ``vlr/``:
- no import of a private module or name (``lightning.pytorch.x._y``, ``from lightning... import _z``);
- in a class derived from a Lightning class, no ``self._name`` (or ``def _name``) that is one of
  that Lightning class's own private names (vlr's own private names in such classes are fine);
- elsewhere, no ``obj._name`` where ``_name`` is a private name of Lightning's source;
- no walk through Lightning's loop internals (``trainer.fit_loop.epoch_loop.batch_progress``).
"""

import ast
import importlib
import inspect
import re
from functools import cache
from pathlib import Path

import lightning
import pytest

VLR = Path(__file__).resolve().parent.parent / "vlr"
LIBRARIES = ("lightning", "lightning_fabric", "pytorch_lightning", "hydra", "torch", "optuna")
LIGHTNING = ("lightning", "lightning_fabric", "pytorch_lightning")
# public attribute names through which only Lightning's internals are reached
INTERNALS = {"fit_loop", "validate_loop", "test_loop", "predict_loop", "epoch_loop", "batch_progress", "epoch_progress"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@cache
def lightning_private_names() -> frozenset[str]:
    """Every private attribute or function name Lightning's own source defines or uses."""
    names: set[str] = set()
    for path in Path(lightning.__file__).parent.rglob("*.py"):
        names.update(n for n in re.findall(r"\.(_[A-Za-z]\w*)", path.read_text(errors="ignore")) if _private(n))
        names.update(n for n in re.findall(r"def (_[A-Za-z]\w*)", path.read_text(errors="ignore")) if _private(n))
    return frozenset(names)


def _private_names_of(cls: type) -> set[str]:
    """The private names a Lightning class and its Lightning bases define or use on ``self``."""
    names = set()
    for base in cls.__mro__:
        if not base.__module__.startswith(LIGHTNING):
            continue
        names.update(n for n in vars(base) if _private(n))
        try:
            source = inspect.getsource(base)
        except (OSError, TypeError):
            continue
        names.update(n for n in re.findall(r"self\.(_[A-Za-z]\w*)", source) if _private(n))
    return names


def _imported_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted path, for the file's imports (``pl`` -> ``lightning.pytorch``)."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                found[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return found


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def _lightning_class(base: ast.expr, imports: dict[str, str]) -> type | None:
    """The Lightning class a class statement's base names, imported; None for any other base."""
    dotted = _dotted(base)
    if dotted is None:
        return None
    head, _, rest = dotted.partition(".")
    full = imports.get(head, head) + (f".{rest}" if rest else "")
    if not full.startswith(LIGHTNING):
        return None
    module, _, name = full.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return found if isinstance(found, type) else None


def private_uses(source: str) -> list[str]:
    """Each use of a private name of Lightning (or of a private module of Lightning, Hydra or torch)."""
    tree = ast.parse(source)
    imports = _imported_names(tree)
    found = []
    for node in ast.walk(tree):
        modules = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for module in modules:
            if module.startswith(LIBRARIES) and any(_private(part) for part in module.split(".")):
                found.append(f"line {node.lineno}: import of {module}")
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        bases = [c for c in (_lightning_class(b, imports) for b in node.bases) if c is not None]
        if not bases:
            continue
        theirs = set().union(*(_private_names_of(c) for c in bases))
        for inner in ast.walk(node):
            if isinstance(inner, ast.Attribute) and _dotted(inner.value) in ("self", "cls") and inner.attr in theirs:
                found.append(f"line {inner.lineno}: {node.name} uses Lightning's self.{inner.attr}")
            if isinstance(inner, ast.FunctionDef) and inner.name in theirs:
                found.append(f"line {inner.lineno}: {node.name} overrides Lightning's {inner.name}")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        if node.attr in INTERNALS:
            found.append(f"line {node.lineno}: Lightning's internals through .{node.attr}")
        elif (
            _private(node.attr)
            and node.attr in lightning_private_names()
            and _dotted(node.value) not in ("self", "cls")
        ):
            found.append(f"line {node.lineno}: .{node.attr}, a private name of Lightning")
    return found


@pytest.mark.parametrize("path", sorted(str(p.relative_to(VLR)) for p in VLR.rglob("*.py")))
def test_vlr_uses_no_private_lightning_api(path):
    assert private_uses((VLR / path).read_text()) == []


def test_the_check_finds_what_vlr_used_to_do():
    """Each way vlr once reached into Lightning is found (so the test above can fail), and vlr's
    own private names in Lightning subclasses are not."""
    earlier = """
from lightning.pytorch.loggers import WandbLogger as _W
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table
from lightning.fabric.loggers.csv_logs import _ExperimentWriter
import lightning.pytorch as pl

class Writer(ExperimentWriter):
    def _check_log_dir_exists(self):
        return self._fs

class Wandb(_W):
    def __init__(self):
        self._wandb_init.pop("anonymous")
        self._own_counter = 0

class Saver(pl.Callback):
    def on_validation_end(self, trainer, pl_module):
        self._saved = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        trainer._logger_connector.reset()
"""
    found = "\n".join(private_uses(earlier))
    for expected in (
        "import of lightning.pytorch.utilities.model_summary.model_summary._format_summary_table",
        "import of lightning.fabric.loggers.csv_logs._ExperimentWriter",
        "Writer overrides Lightning's _check_log_dir_exists",
        "Writer uses Lightning's self._fs",
        "Wandb uses Lightning's self._wandb_init",
        "Lightning's internals through .fit_loop",
        "Lightning's internals through .batch_progress",
        "._logger_connector, a private name of Lightning",
    ):
        assert expected in found
    assert "_own_counter" not in found and "_saved" not in found
