"""What the parity harness records from a Paddle model (twin of ``torch_impl/capture.py``: same functions).

``capture(model, backend, images, labels, ...)`` runs one forward pass (and, when asked, one backward pass of the
training loss) and returns plain numpy data keyed by canonical (torch-layout) names:

  * ``forward``: every sublayer's output in the order the outputs are produced (paddle forward post-hooks fire
    when a layer returns, so a child comes before its parent).  Key = the layer's dotted name (the root is
    ``(model)``); the k-th call of a layer called several times is ``name#k`` (k >= 2); tuple/list/dict outputs
    are flattened as ``name[i]`` / ``name[key]``.  Each record also names the layer and its class.
  * ``inputs``: the floating tensors each layer call received (same keys).
  * ``output_grads``: d loss / d (each recorded output), in the order backward produces them.
  * ``param_grads``: d loss / d (every trainable parameter) under its canonical name, ``paddle.nn.Linear`` weights
    transposed to torch's ``[out, in]`` (``layout.neutral_name_table``); ``None`` when backward did not reach it.
    ``input_grad``: d loss / d images.  ``loss`` and ``logits``.

The loss is the training task's own (``tasks/classification.compose_loss``: cross-entropy with label smoothing,
+ ``aux_weight`` times the auxiliary head's loss); random layers draw their masks from ``mask_source``, so both backends drop the same units.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import paddle

from paddle_impl import layout, ops
from paddle_impl.tasks.classification import compose_loss

ROOT_NAME = "(model)"

__all__ = ["ROOT_NAME", "capture", "module_table", "trainable_names", "state_names", "to_numpy"]


def to_numpy(tensor: paddle.Tensor) -> np.ndarray:
    """A host copy (never a view: a later in-place op must not change a recorded value)."""
    return np.array(tensor.detach().numpy(), copy=True)


def module_table(model: paddle.nn.Layer) -> List[Tuple[str, str]]:
    """``(canonical name, class name)`` of every layer in definition order; the root is ``ROOT_NAME``."""
    return [(name or ROOT_NAME, type(m).__name__) for name, m in model.named_sublayers(include_self=True)]


def trainable_names(model: paddle.nn.Layer) -> List[str]:
    """Canonical names of the parameters the optimizer trains, in definition order."""
    table = layout.neutral_name_table(model)
    return [table[name][0] for name, _ in layout.trainable_named_parameters(model)]


def state_names(model: paddle.nn.Layer) -> List[str]:
    """Canonical names of every state entry (parameters and buffers), in definition order."""
    return list(layout.expected_shapes(model).keys())


def _flatten(value: Any, key: str, out: List[Tuple[str, paddle.Tensor]]) -> None:
    if isinstance(value, paddle.Tensor):
        out.append((key, value))
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            _flatten(item, f"{key}[{i}]", out)
    elif isinstance(value, dict):
        for k, item in value.items():
            _flatten(item, f"{key}[{k}]", out)


def capture(model: paddle.nn.Layer, backend, images: np.ndarray, labels: Optional[np.ndarray] = None, *,
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
        def hook(layer, args, output):
            calls[name] = calls.get(name, 0) + 1
            key = name if calls[name] == 1 else f"{name}#{calls[name]}"
            if record_inputs:
                flat_in: List[Tuple[str, paddle.Tensor]] = []
                _flatten(list(args), key, flat_in)
                inputs[key] = [to_numpy(t) for _, t in flat_in if t.is_floating_point()]
            flat: List[Tuple[str, paddle.Tensor]] = []
            _flatten(output, key, flat)
            for part, tensor in flat:
                records.append({"key": part, "module": name, "call": calls[name], "type": cls,
                                "array": to_numpy(tensor)})
                if backward and not tensor.stop_gradient:
                    tensor.register_hook(_grad_recorder(part, out_grads))
            return None

        return hook

    for name, sub in model.named_sublayers(include_self=True):
        handles.append(sub.register_forward_post_hook(make_hook(name or ROOT_NAME, type(sub).__name__)))

    previous_sources = _attach(model, mask_source)
    try:
        model.train() if train else model.eval()
        if mask_source is not None:
            mask_source.start_step(step)
        if train and hasattr(model, "set_training_step"):
            model.set_training_step(step)
        x = backend.to_tensor(images)
        if backward:
            x.stop_gradient = False
        with paddle.set_grad_enabled(backward):
            out = model(x)
            logits = out[0] if isinstance(out, tuple) else out
            result: Dict[str, Any] = {"logits": to_numpy(logits)}
            if labels is not None:
                y = paddle.to_tensor(np.asarray(labels, dtype=np.int64))
                loss, _ = compose_loss(out, y, label_smoothing, aux_weight)  # the training task's loss
                result["loss"] = to_numpy(loss)
                if backward:
                    for p in model.parameters():
                        p.clear_gradient(False)
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
        table = layout.neutral_name_table(model)
        grads: List[Tuple[str, Optional[np.ndarray]]] = []
        for name, p in layout.trainable_named_parameters(model):
            neutral, transpose = table[name]
            g = None if p.grad is None else to_numpy(p.grad)
            if g is not None and transpose:
                g = np.ascontiguousarray(g.T)
            grads.append((neutral, g))
            p.clear_gradient(False)
        result["param_grads"] = grads
    return result


def _grad_recorder(key: str, sink: List[Tuple[str, np.ndarray]]):
    def record(grad):
        sink.append((key, to_numpy(grad)))
        return None

    return record


def _attach(model: paddle.nn.Layer, source) -> List[Tuple[Any, Any]]:
    """Attach ``source`` to every random layer; return what was there so it can be put back."""
    previous = [(m, m.mask_source) for m in model.sublayers(include_self=True)
                if isinstance(m, (ops.DropPath, ops.Dropout))]
    if source is not None:
        ops.attach_mask_source(model, source)
    return previous


def _restore(previous: List[Tuple[Any, Any]]) -> None:
    for layer, source in previous:
        layer.mask_source = source
