"""What the parity harness records from a PyTorch model (twin of ``paddle_impl/capture.py``: same functions).

``capture(model, backend, images, labels, ...)`` runs one forward pass (and, when asked, one backward pass of the
training loss) and returns plain numpy data keyed by canonical names:

  * ``forward``: every submodule's output in the order the outputs are produced (torch forward hooks fire when a
    module returns, so a child comes before its parent).  Key = the module's dotted name (the root is ``(model)``);
    the k-th call of a module called several times is ``name#k`` (k >= 2); tuple/list/dict outputs are flattened
    as ``name[i]`` / ``name[key]``.  Each record also names the module and its class.
  * ``inputs``: the floating tensors each module call received (same keys), so a report can tell "this module's
    inputs agree but its output does not" from "its input already differed".
  * ``output_grads``: d loss / d (each recorded output), in the order backward produces them.
  * ``param_grads``: d loss / d (every trainable parameter) under its canonical name (torch layout); ``None`` when
    backward did not reach it.  ``input_grad``: d loss / d images.  ``loss`` and ``logits``.

The loss is the training task's own (``tasks/classification.compose_loss``: cross-entropy with label smoothing,
+ ``aux_weight`` times the auxiliary head's loss when the model returns ``(logits, aux)``).  Random layers draw their masks from ``mask_source``
(``common.random_masks.MaskSource``, re-seeded with ``start_step(step)``), so both backends drop the same units.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from torch_impl import layout, ops
from torch_impl.tasks.classification import compose_loss

ROOT_NAME = "(model)"

__all__ = ["ROOT_NAME", "capture", "module_table", "trainable_names", "state_names", "to_numpy"]


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A host copy (never a view: a later in-place op must not change a recorded value)."""
    return tensor.detach().cpu().numpy().copy()


def module_table(model: torch.nn.Module) -> List[Tuple[str, str]]:
    """``(canonical name, class name)`` of every module in definition order; the root is ``ROOT_NAME``."""
    return [(name or ROOT_NAME, type(m).__name__) for name, m in model.named_modules()]


def trainable_names(model: torch.nn.Module) -> List[str]:
    """Canonical names of the parameters the optimizer trains, in definition order."""
    return [name for name, _ in layout.trainable_named_parameters(model)]


def state_names(model: torch.nn.Module) -> List[str]:
    """Canonical names of every state entry (parameters and buffers), in definition order."""
    return list(layout.expected_shapes(model).keys())


def _flatten(value: Any, key: str, out: List[Tuple[str, torch.Tensor]]) -> None:
    if isinstance(value, torch.Tensor):
        out.append((key, value))
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            _flatten(item, f"{key}[{i}]", out)
    elif isinstance(value, dict):
        for k, item in value.items():
            _flatten(item, f"{key}[{k}]", out)


def capture(model: torch.nn.Module, backend, images: np.ndarray, labels: Optional[np.ndarray] = None, *,
            train: bool = False, backward: bool = False, mask_source=None, step: int = 0,
            label_smoothing: float = 0.0, aux_weight: float = 0.0, record_inputs: bool = True) -> Dict[str, Any]:
    """Run ``model`` once on ``images`` and record it (see the module docstring).  ``backward`` needs ``labels``."""
    if backward and labels is None:
        raise ValueError("capture: backward=True needs labels")
    records: List[Dict[str, Any]] = []
    inputs: Dict[str, List[np.ndarray]] = {}
    out_grads: List[Tuple[str, np.ndarray]] = []
    calls: Dict[str, int] = {}
    handles = []

    def make_hook(name: str, cls: str):
        def hook(module, args, output):
            calls[name] = calls.get(name, 0) + 1
            key = name if calls[name] == 1 else f"{name}#{calls[name]}"
            if record_inputs:
                flat_in: List[Tuple[str, torch.Tensor]] = []
                _flatten(list(args), key, flat_in)
                inputs[key] = [to_numpy(t) for _, t in flat_in if t.is_floating_point()]
            flat: List[Tuple[str, torch.Tensor]] = []
            _flatten(output, key, flat)
            for part, tensor in flat:
                records.append({"key": part, "module": name, "call": calls[name], "type": cls,
                                "array": to_numpy(tensor)})
                if backward and tensor.requires_grad:
                    tensor.register_hook(_grad_recorder(part, out_grads))

        return hook

    for name, cls in module_table(model):
        sub = model.get_submodule("" if name == ROOT_NAME else name)
        handles.append(sub.register_forward_hook(make_hook(name, cls)))

    previous_sources = _attach(model, mask_source)
    try:
        model.train(train)
        if mask_source is not None:
            mask_source.start_step(step)
        if train and hasattr(model, "set_training_step"):
            model.set_training_step(step)
        x = backend.to_tensor(images)
        if backward:
            x = x.detach().requires_grad_(True)
        with torch.set_grad_enabled(backward):
            out = model(x)
            logits = out[0] if isinstance(out, tuple) else out
            result: Dict[str, Any] = {"logits": to_numpy(logits)}
            if labels is not None:
                y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(logits.device)
                loss, _ = compose_loss(out, y, label_smoothing, aux_weight)  # the training task's loss
                result["loss"] = to_numpy(loss)
                if backward:
                    for p in model.parameters():
                        p.grad = None
                    loss.backward()
    finally:
        for handle in handles:
            handle.remove()
        _restore(previous_sources)
        model.eval()
    result["forward"] = records
    result["inputs"] = inputs
    result["mask_draws"] = int(mask_source.draws) if mask_source is not None else 0
    if backward:
        result["output_grads"] = out_grads
        result["input_grad"] = to_numpy(x.grad) if x.grad is not None else None
        grads: List[Tuple[str, Optional[np.ndarray]]] = []
        for name, p in layout.trainable_named_parameters(model):
            grads.append((name, None if p.grad is None else to_numpy(p.grad)))
            p.grad = None
        result["param_grads"] = grads
    return result


def _grad_recorder(key: str, sink: List[Tuple[str, np.ndarray]]):
    def record(grad):
        sink.append((key, to_numpy(grad)))
        return None

    return record


def _attach(model: torch.nn.Module, source) -> List[Tuple[Any, Any]]:
    """Attach ``source`` to every random layer; return what was there so it can be put back."""
    previous = [(m, m.mask_source) for m in model.modules() if isinstance(m, (ops.DropPath, ops.Dropout))]
    if source is not None:
        ops.attach_mask_source(model, source)
    return previous


def _restore(previous: List[Tuple[Any, Any]]) -> None:
    for module, source in previous:
        module.mask_source = source
