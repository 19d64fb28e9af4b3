"""The NAS families the toolkit knows: the one registry every layer reads.

A family is available once its spec module (``common/specs/<family>.py``) and both model builders
(``torch_impl/models/<family>.py``, ``paddle_impl/models/<family>.py``) exist.  Asking for a family
that is not built yet stops with a message that says so; nothing is silently skipped.

Everything a family brings is recorded here as plain data (:class:`Family`, frozen) with module paths as
strings, so ``common/`` never imports ``weights_tools``, ``tools``, ``bench`` or ``parity_tests``; whoever needs
the code imports the path (:func:`resolve`).  Readers:
  ``common/config.py``        ``ENUMS["MODEL.FAMILY"]`` = :func:`family_names`
  ``bench/run.py``            :func:`bench_module_path`
  ``weights_tools/convert.py``  :func:`import_formats` / :func:`importer_target` (``convert --from``)
  ``weights_tools/recognise.py`` :func:`recognition_candidates` (a bare state dict -> family and network)
  ``tools/commands.py``       :func:`spec_module`; :func:`task_kind` / :func:`task_module_path` for the task code

Each spec module provides:
  ``spec_from_config(cfg) -> spec``            the network as data, from MODEL.* / DATA.* keys
  ``describe(spec) -> dict``                    genotype / path / code and headline numbers, JSON-able
  ``count_params(spec) -> int``                 trainable parameters, counted from the spec
  ``count_macs(spec, image_size) -> int``       multiply-accumulates at an input size (rule in its docstring)
  ``init_state(spec, rng) -> dict``             initial weights (canonical names, torch layout) from numpy
  ``recognition_candidates(tensors) -> [(name, {tensor name: shape})]``  every network of the family whose
                                                state dict could be ``tensors`` (at its class count), optional
Each backend model module provides ``build(spec)`` returning a module/layer in eval mode.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Dict, List, Mapping, Optional, Tuple

#: the commands that run a task (``<backend>_impl/tasks/<kind>.py``)
TASK_COMMANDS = ("train", "test", "infer", "search")
BACKENDS = ("torch", "paddle")


@dataclasses.dataclass(frozen=True)
class Importer:
    """A ``convert --from <format>`` importer a family brings.

    ``target``: ``"module:function"``, called as ``function(path, net="", drop_background=False, with_aux=False)``
    and returning a ``common.checkpoint.Checkpoint`` whose meta names the family and network."""

    format: str
    target: str
    help: str = ""


@dataclasses.dataclass(frozen=True)
class Family:
    """What one NAS family is and where its code lives (module paths, never imports)."""

    name: str                                   # MODEL.FAMILY value
    title: str                                  # for messages
    spec: str                                   # spec module path, e.g. "common.specs.cream"
    tasks: Tuple[Tuple[str, Optional[str]], ...] = ()   # (command, task kind or None = not in this version)
    bench: Optional[str] = None                 # benchmark module path, e.g. "bench.cream"
    importers: Tuple[Importer, ...] = ()        # convert --from formats this family brings
    recognise: Optional[str] = None             # spec-module function: tensors -> [(name, expected shapes)]

    def task_kind(self, command: str) -> Optional[str]:
        return dict(self.tasks).get(command)


_CLASSIFICATION = (("train", "classification"), ("test", "classification"), ("infer", "classification"),
                   ("search", None))

REGISTRY: Tuple[Family, ...] = (
    Family("cream", "Cream of the Crop child nets and supernet search", "common.specs.cream",
           tasks=(("train", "classification"), ("test", "classification"), ("infer", "classification"),
                  ("search", "cream_search")),
           bench="bench.cream",
           importers=(Importer("cream-pth", "weights_tools.convert:import_cream_pth",
                               "upstream Cream *.pth.tar (state_dict + state_dict_ema)"),),
           recognise="recognition_candidates"),
    Family("pnasnet", "PNASNet-5 Large / Mobile", "common.specs.pnasnet", tasks=_CLASSIFICATION,
           bench="bench.pnasnet",
           importers=(Importer("tf", "weights_tools.convert:import_tf",
                               "a TensorFlow checkpoint prefix (PNASNet-5 official layout); needs tensorflow"),),
           recognise="recognition_candidates"),
    Family("pcdarts", "PC-DARTS search and evaluation networks", "common.specs.pcdarts",
           tasks=(("train", "classification"), ("test", "classification"), ("infer", "classification"),
                  ("search", "pcdarts_search")),
           bench="bench.pcdarts", recognise="recognition_candidates"),
    Family("nasbench_mr", "NAS-Bench-MR multi-resolution networks", "common.specs.nasbench_mr",
           tasks=_CLASSIFICATION, bench="bench.nasbench_mr", recognise="recognition_candidates"),
    Family("ncp", "NCP accuracy predictor (and network coding propagation)", "common.specs.ncp",
           tasks=(("train", "ncp_predictor"), ("test", "ncp_predictor"), ("infer", None), ("search", "ncp_search")),
           bench="bench.ncp", recognise="recognition_candidates"),
)

#: ``{name: Family}`` in registry order
FAMILIES: Mapping[str, Family] = {f.name: f for f in REGISTRY}


class FamilyNotAvailable(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------ lookups
def family_names() -> Tuple[str, ...]:
    """Every MODEL.FAMILY value, built or not (``common/config.py`` ENUMS)."""
    return tuple(FAMILIES)


def get(family: str) -> Family:
    """The registry entry; an unknown name is a :class:`FamilyNotAvailable` naming the known ones."""
    try:
        return FAMILIES[family]
    except (KeyError, TypeError):
        raise FamilyNotAvailable(f"MODEL.FAMILY {family!r} is unknown; known families: {sorted(FAMILIES)}") from None


def resolve(target: str) -> Any:
    """``"package.module:attr"`` -> the attribute (imports the module now); ``"package.module"`` -> the module."""
    module, _, attr = target.partition(":")
    mod = importlib.import_module(module)
    return getattr(mod, attr) if attr else mod


def _import_spec(entry: Family) -> Optional[Any]:
    try:
        return importlib.import_module(entry.spec)
    except ModuleNotFoundError as exc:
        if exc.name != entry.spec:
            raise
        return None


def spec_module(family: str) -> Any:
    entry = get(family)
    mod = _import_spec(entry)
    if mod is None:
        raise FamilyNotAvailable(
            f"MODEL.FAMILY {family!r} ({entry.title}) is not built yet in this version; "
            f"available: {', '.join(available_families())}"
        )
    if not hasattr(mod, "spec_from_config"):
        raise FamilyNotAvailable(
            f"MODEL.FAMILY {family!r} ({entry.title}): its spec exists but the model builders are not wired to the "
            f"entry point yet; available: {', '.join(available_families())}"
        )
    return mod


def available_families() -> List[str]:
    out = []
    for entry in REGISTRY:
        mod = _import_spec(entry)
        if mod is not None and hasattr(mod, "spec_from_config"):
            out.append(entry.name)
    return out


# ------------------------------------------------------------------------------------------------ tasks
def task_kind(family: str, command: str) -> Optional[str]:
    """The task kind ``command`` runs for ``family`` (e.g. ``"classification"``), or None when this version has
    no such task for the family (``search`` today)."""
    if command not in TASK_COMMANDS:
        raise ValueError(f"{command!r} is not a task command; task commands: {list(TASK_COMMANDS)}")
    return get(family).task_kind(command)


def task_kind_for_spec(family: str, command: str, spec_module=None, spec=None) -> Optional[str]:
    """:func:`task_kind`, unless the spec module's optional ``task_kind_for(spec, command)`` names another task for
    this spec (a NAS-Bench-MR network with the segmentation head trains with ``segmentation``)."""
    hook = getattr(spec_module, "task_kind_for", None) if spec is not None else None
    kind = hook(spec, command) if hook is not None else None
    return kind or task_kind(family, command)


def task_module_path(family: str, command: str, backend: str) -> Optional[str]:
    """``"<backend>_impl.tasks.<kind>"`` for the task ``command`` runs, or None (see :func:`task_kind`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {list(BACKENDS)}")
    kind = task_kind(family, command)
    return None if kind is None else f"{backend}_impl.tasks.{kind}"


# ------------------------------------------------------------------------------------------------ bench
def bench_module_path(family: str) -> Optional[str]:
    """The family's benchmark module path (``bench.<family>``), or None when it has none yet."""
    return get(family).bench


def bench_families() -> Tuple[str, ...]:
    return tuple(f.name for f in REGISTRY if f.bench)


# ------------------------------------------------------------------------------------------------ convert
def import_formats() -> Tuple[str, ...]:
    """The ``convert --from`` formats the families bring (the generic ones live in ``weights_tools/convert.py``)."""
    return tuple(imp.format for f in REGISTRY for imp in f.importers)


def importer(fmt: str) -> Tuple[Family, Importer]:
    for entry in REGISTRY:
        for imp in entry.importers:
            if imp.format == fmt:
                return entry, imp
    raise KeyError(f"no family brings the import format {fmt!r}; family formats: {list(import_formats())}")


def importer_target(fmt: str) -> str:
    """``"module:function"`` of the importer of a family format (``cream-pth``, ``tf``)."""
    return importer(fmt)[1].target


# ------------------------------------------------------------------------------------------------ recognition
def recognition_candidates(tensors: Mapping[str, Any]) -> List[Tuple[str, str, Dict[str, tuple]]]:
    """``(family, name, expected shapes)`` for every network of every built family that offers a recognition
    hook, at the class count ``tensors`` has."""
    out = []
    for entry in REGISTRY:
        if not entry.recognise:
            continue
        mod = _import_spec(entry)
        hook = getattr(mod, entry.recognise, None) if mod is not None else None
        if hook is None:
            continue
        out.extend((entry.name, name, shapes) for name, shapes in hook(tensors))
    return out


__all__ = [
    "TASK_COMMANDS", "BACKENDS", "Importer", "Family", "REGISTRY", "FAMILIES", "FamilyNotAvailable",
    "family_names", "get", "resolve", "spec_module", "available_families", "task_kind", "task_kind_for_spec",
    "task_module_path",
    "bench_module_path", "bench_families", "import_formats", "importer", "importer_target",
    "recognition_candidates",
]
