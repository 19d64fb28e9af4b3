"""The Cream supernet search in Paddle: the student / teacher step and the meta matching network update.

Twin of ``torch_impl/tasks/cream_search.py`` (same class, same methods, same formulas); the declarations, the
board and the files are in ``common/tasks/cream_search.py`` (and ``common/cream_board.py``), the loop is
``common/engine.py``.  Gradients are taken with ``paddle.grad`` with respect to exactly the tensors a step
updates: the path's parameters (and the meta layer's when ``CREAM.META_VALUE_GRAD`` sends the main loss through
the meta value); choices off the path get none.

The meta update (upstream ``MetaMatchingNetwork.run_update``), with ``m(theta) = sigmoid(-w)`` the meta value and
``h = d CE_soft(student(x), teacher(x)) / dW`` the student's distillation gradient on the board slice ``x``:
  1. real student step: ``g = m h`` on the path's parameters, clipped to ``META_OPTIM.GRAD_CLIP``, one weights step;
  2. ``gv = d CE_ls(student(x_val), y_val) / dW`` at the stepped weights (``x_val`` = the batch's next SLICE images);
  3. the meta gradient of the simulated step ``W' = W - lr m(theta) h``: ``d <gv, W'> / d theta =
     -lr <gv, h> dm/dtheta``, exactly what ``autograd.grad(W', theta, grad_outputs=gv)`` through
     ``create_graph=True`` gives (``theta`` reaches ``W'`` only through the scalar ``m``), computed from first-order
     gradients only, so it runs where no double-grad kernel exists (paddle on CPU: depthwise conv, relu6).
     ``<gv, h>`` is summed in float64 over every path tensor (``META_TENSORS all``) or conv_stem.weight alone
     (``first``: upstream), with ``h`` from before the student step (``META_GRAD_AT pre_step``) or recomputed
     after it (``post_step``); ``lr`` is the weights' LR or the meta LR (``SIMULATE_LR``);
  4. one meta step on that gradient (clipped to ``META_OPTIM.GRAD_CLIP``), in float64 by default.
"""
from __future__ import annotations

import contextlib
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import paddle

from common.specs import cream as C
from common.tasks import Batch, NonFiniteError
from common.tasks.cream_search import CreamSearch
from paddle_impl import layout, losses, optim
from paddle_impl.tasks.classification import all_finite, apply_gradients, eval_sums


class Task(CreamSearch):
    def __init__(self, backend, model: paddle.nn.Layer, cfg, spec=None, for_eval: bool = False):
        super().__init__(cfg, for_eval=for_eval, spec=spec if isinstance(spec, C.CreamSupernetSpec) else model.spec)
        self.backend = backend
        self.model = model
        self.ema = None
        self.optimizers = {}
        if self.meta_dtype == "float64":
            model.set_meta_dtype("float64")
        meta_names = set(C.META_PARAMETERS)
        named = layout.trainable_named_parameters(model)
        self.meta_params = [p for _, p in model.meta_parameters()]
        if not for_eval:
            self.optimizers = {
                "weights": optim.build_optimizer(cfg, [(n, p) for n, p in named if n not in meta_names], model=model),
                "meta": optim.build_optimizer(cfg, [(n, p) for n, p in named if n in meta_names], model=model,
                                              node="META_OPTIM"),
            }
        self._path_cache: Dict[C.Path, List[paddle.Tensor]] = {}
        self._shadow = None  # the float64 supernet of the live scores' JVP (CREAM.META_VALUE_GRAD)

    # ------------------------------------------------------------------------------------------ pieces
    def tensors(self, batch: Batch) -> Tuple[paddle.Tensor, paddle.Tensor]:
        x = self.backend.to_tensor(batch[0])
        y = paddle.to_tensor(np.asarray(batch[1], dtype=np.int64))
        return x, y

    def _bn_buffers(self) -> List[paddle.Tensor]:
        """The BN running statistics (paddle keeps them as non-trainable parameters)."""
        return ([p for _, p in self.model.named_parameters() if p.stop_gradient]
                + [b for _, b in self.model.named_buffers()])

    @contextlib.contextmanager
    def replicated(self):
        """Forwards on inputs every rank holds alike (the board's images, the meta update's global slices): BN
        normalises locally, as the single-process run does, instead of syncing identical copies (which would count
        them ``world_size`` times in the running variance's n / (n - 1))."""
        group = self.backend.dist
        synced = group is not None and group.sync_bn
        if synced:
            group.sync_bn = False
        try:
            yield
        finally:
            if synced:
                group.sync_bn = True

    def global_rows(self, rows: paddle.Tensor, first: int, count: int) -> paddle.Tensor:
        """Rows ``first .. first + count`` of the *global* batch, identical on every rank: the loader gives rank
        ``r`` every ``world_size``-th sample, so global row ``g`` is row ``g // W`` of rank ``g % W`` (a world of one:
        the rows themselves).  The board's images and soft targets and the meta update's slices come from here, so
        every rank holds the same board and a 2 x 16 run equals a 1 x 32 one."""
        group = self.backend.dist
        if group is None:
            return rows[first:first + count]
        w = group.world_size
        lo, hi = first // w, -(-(first + count) // w)
        parts = group.all_gather(rows[lo:hi])
        mixed = paddle.stack(parts, 1).reshape([-1, *rows.shape[1:]])
        return mixed[first - lo * w:first - lo * w + count]

    def global_top1(self, logits: paddle.Tensor, y: paddle.Tensor) -> float:
        """Top-1 (percent) of the global batch."""
        (top1,) = losses.accuracy_topk(logits.detach(), y, ks=(1,))
        group = self.backend.dist
        if group is None:
            return float(top1)
        correct, count = group.sum_floats([float(top1) * len(y) / 100.0, float(len(y))])
        return 100.0 * correct / count

    def path_params(self, path: C.Path) -> List[paddle.Tensor]:
        params = self._path_cache.get(path)
        if params is None:
            if len(self._path_cache) > 256:
                self._path_cache.clear()
            params = self._path_cache[path] = [p for _, p in self.model.path_parameters(path)]
        return params

    def forward(self, x: paddle.Tensor, path: C.Path) -> paddle.Tensor:
        if not self.model.training:
            self.model.train()
        return self.model(x, path)

    def match_scores(self, path: C.Path, with_grad: bool) -> List[paddle.Tensor]:
        """The matching score ``w_j`` of every board entry for the student ``path``: the meta layer on
        ``softmax(student(x_j)) - p_j`` (student forwards in training mode, as upstream; no gradient to the student
        unless ``with_grad`` says the main loss sends one through the meta value)."""
        with self.replicated():
            return self._scores(path, with_grad)

    def _scores(self, path: C.Path, with_grad: bool):
        scores = []
        for entry in self.board.entries:
            x = self.backend.to_tensor(entry.images)
            with paddle.set_grad_enabled(with_grad):
                probs = losses.softmax(self.forward(x, path), axis=1)
            soft = paddle.to_tensor(entry.soft, dtype=probs.dtype)
            scores.append(self.model.forward_meta(probs - soft).reshape(()))
        return scores

    def select_teacher(self, path: C.Path, grad: str = "none") -> Tuple[Optional[paddle.Tensor], float, C.Path, int]:
        """``(meta value tensor or None, meta value, teacher path, teacher index)``.  ``grad``: "none" (a constant),
        "meta" (the value keeps its graph to the meta layer: the meta update) or "all" (also to the student path:
        ``META_VALUE_GRAD``)."""
        if self.pick == "top1":
            return None, 0.5, self.board.top1().path, 0
        scores = self.match_scores(path, with_grad=grad == "all")
        values = [float(w.detach()) for w in scores]
        index = self.board.choose_teacher(values)
        w = scores[self.meta_value_index(index)]
        if grad == "none":
            w = w.detach()
        value = paddle.nn.functional.sigmoid(-w)
        return (value if grad != "none" else None), float(value.detach()), self.board.entries[index].path, index

    def soft_targets(self, x: paddle.Tensor, path: C.Path) -> paddle.Tensor:
        """The teacher path's softmax on ``x``: no gradient, training mode (its BN statistics move, as upstream)."""
        with paddle.no_grad():
            return losses.softmax(self.forward(x, path), axis=1)

    # ------------------------------------------------------------------------------------------ meta update
    def meta_gradient(self, batch: Batch, path: C.Path, lrs: Mapping[str, float]) -> Dict[str, object]:
        with self.replicated():
            return self._meta_gradient(batch, path, lrs)

    def _meta_gradient(self, batch: Batch, path: C.Path, lrs: Mapping[str, float]) -> Dict[str, object]:
        """Steps 1-3 of the module docstring (the student step included); returns the meta gradient (float64 numpy,
        one array per meta parameter, in the backend's layout), ``<gv, h>``, the meta value and the teacher index.
        With ``CREAM.META_VALUE_GRAD`` (upstream) the scores keep their graph to the student: see
        :meth:`live_score_terms`."""
        s = self.slice
        images, labels = self.tensors(batch)
        x = self.global_rows(images, 0, s)
        x_val, y_val = self.global_rows(images, s, s), self.global_rows(labels, s, s)
        live = self.meta_value_grad
        value_t, value, teacher, index = self.select_teacher(path, grad="all" if live else "meta")
        soft = self.soft_targets(x, teacher)
        params = self.path_params(path)
        n = self.meta_tensor_count(len(params))
        if live:  # dm/dW and dm/dtheta from the one score graph; the pre-step weights for the score's JVP
            dm = paddle.grad(value_t, params + self.meta_params)
            dm_w, dm_theta = dm[:len(params)], dm[len(params):]
            before = self.backend.state_to_neutral(self.model)
        else:
            dm_theta = paddle.grad(value_t, self.meta_params)
        ce = losses.soft_target_cross_entropy(self.forward(x, path), soft)
        h = paddle.grad(ce, params)
        ce_value = float(ce.detach())
        del ce
        if not bool(all_finite(h)):
            raise NonFiniteError("non-finite distillation gradient in the meta update")
        # 1. the real student step on g = m h (+ CE dm/dW with live scores), clipped
        g = [value * a + ce_value * b for a, b in zip(h, dm_w)] if live else [value * a for a in h]
        apply_gradients(self.optimizers["weights"], params, g, lrs["weights"], self.meta_clip)
        # 2. the validation slice at the stepped weights
        val = losses.cross_entropy(self.forward(x_val, path), y_val, self.smoothing)
        gv = paddle.grad(val, params)
        del val
        if self.meta_grad_at == "post_step":
            buffers = [b.detach().clone() for b in self._bn_buffers()]
            ce = losses.soft_target_cross_entropy(self.forward(x, path), soft)
            h = paddle.grad(ce, params)
            del ce
            with paddle.no_grad():
                for b, saved in zip(self._bn_buffers(), buffers):
                    paddle.assign(saved, b)
        inner = sum(float(paddle.sum(a.astype("float64") * b.astype("float64"))) for a, b in zip(gv[:n], h[:n]))
        # 3. d <gv, W - lr m h> / d theta = -lr <gv, h> dm / dtheta  (+ the live scores' terms)
        dm_theta = [d.astype("float64").numpy() for d in dm_theta]
        lr = self.simulated_lr(lrs)
        grads = [-lr * inner * d for d in dm_theta]
        if live:
            u = self.score_jvp(before, path, self.meta_value_index(index), [t.astype("float64") for t in gv[:n]])
            grads = [a + b for a, b in zip(grads, self.live_score_terms(u, value, ce_value, dm_theta, lr))]
        return {"grads": grads, "inner": inner, "meta_value": value, "teacher": index}

    def score_jvp(self, state: Mapping[str, np.ndarray], path: C.Path, k: int,
                  direction: List[paddle.Tensor]) -> np.ndarray:
        """``J v``: the derivative of board entry ``k``'s score features ``softmax(student(x_k)) - p_k`` along
        ``direction`` (the first path tensors' validation gradient), at the weights ``state``, by a central
        difference in float64 on a float64 copy of the supernet (paddle has no double-grad kernel for depthwise
        convs on CPU); the step is ``SCORE_JVP_EPS`` x ||W|| / ||v|| over the tensors the direction covers."""
        net = self._float64_copy(state)
        params = [p for _, p in net.path_parameters(path)][:len(direction)]
        base = [p.detach().clone() for p in params]
        norm_w = float(paddle.sqrt(sum(paddle.sum(b * b) for b in base)))
        norm_v = float(paddle.sqrt(sum(paddle.sum(d * d) for d in direction)))
        if not norm_v > 0:
            return np.zeros(self.spec.meta_features)
        eps = self.score_jvp_eps * max(norm_w, 1.0) / norm_v
        entry = self.board.entries[k]
        x = paddle.to_tensor(np.ascontiguousarray(entry.images), dtype="float64")
        out = []
        for sign in (1.0, -1.0):
            with paddle.no_grad():
                for p, b, d in zip(params, base, direction):
                    paddle.assign(b + (sign * eps) * d, p)
                out.append(losses.softmax(net(x, path), axis=1).numpy().reshape(-1))
        return (out[0] - out[1]) / (2 * eps)

    def _float64_copy(self, state: Mapping[str, np.ndarray]) -> paddle.nn.Layer:
        if self._shadow is None:
            from paddle_impl.models.cream import CreamSupernet

            self._shadow = CreamSupernet(self.spec)
            self._shadow.to(dtype="float64")
        layout.load_neutral(self._shadow, {k: np.asarray(v, np.float64) for k, v in state.items()}, "supernet")
        self._shadow.train()
        return self._shadow

    def meta_update(self, batch: Batch, path: C.Path, lrs: Mapping[str, float]) -> Dict[str, object]:
        out = self.meta_gradient(batch, path, lrs)
        if not all(np.isfinite(g).all() for g in out["grads"]):
            raise NonFiniteError(f"non-finite meta gradient (<gv, h> = {out['inner']!r})")
        grads = [paddle.to_tensor(g, dtype=p.dtype) for g, p in zip(out["grads"], self.meta_params)]
        apply_gradients(self.optimizers["meta"], self.meta_params, grads, lrs["meta"], self.meta_clip)
        self.record_meta_update()
        return out

    # ------------------------------------------------------------------------------------------ the step
    def train_step(self, batches: Mapping[str, Batch], lrs: Mapping[str, float], step: int) -> Dict[str, float]:
        batch = batches["train"]
        path = self.sample_path(step)
        if self.meta_update_due(len(batch[1]) * (1 if self.backend.dist is None else self.backend.dist.world_size)):
            self.meta_update(batch, path, lrs)
        x, y = self.tensors(batch)
        params = self.path_params(path)
        teacher_soft, value_t, value, kd, index = None, None, None, None, None
        distil = self.distilling()
        if distil:
            live = self.pick == "meta" and self.meta_value_grad
            value_t, value, teacher, index = self.select_teacher(path, grad="all" if live else "none")
            teacher_soft = self.soft_targets(x, teacher)
        logits = self.forward(x, path)
        ce = losses.cross_entropy(logits, y, self.smoothing)
        targets = params
        if distil:
            kd = losses.soft_target_cross_entropy(logits, teacher_soft)
            m = value_t.astype(logits.dtype) if value_t is not None else value
            loss = (m * kd + (2 - m) * ce) / 2
            if value_t is not None:
                targets = params + self.meta_params
        else:
            loss = ce
        grads = paddle.grad(loss, targets)
        finite = paddle.stack([paddle.isfinite(loss.detach()).all(), all_finite([logits.detach()]), all_finite(grads)])
        finite = finite.cpu().numpy()
        if not finite.all():  # nothing is touched
            what = [w for w, ok in zip(("loss", "logits", "gradients"), finite) if not ok]
            raise NonFiniteError(f"non-finite {' and '.join(what)} (loss {float(loss.detach()):.4g})")
        apply_gradients(self.optimizers["weights"], params, grads[:len(params)], lrs["weights"], self.grad_clip)
        if len(targets) > len(params):
            apply_gradients(self.optimizers["meta"], self.meta_params, grads[len(params):], lrs["meta"])
        prec1 = self.global_top1(logits, y)
        s = self.slice
        stored = teacher_soft if (distil and self.board_stores_teacher) else losses.softmax(logits.detach(), axis=1)
        entered = False
        if len(y) * (1 if self.backend.dist is None else self.backend.dist.world_size) >= s:
            entered = self.enter_board(step, prec1, path, self.backend.to_numpy(self.global_rows(x, 0, s)),
                                       self.backend.to_numpy(self.global_rows(stored, 0, s)))
        self.record(float(kd.detach()) if kd is not None else None, value, entered, path, index)
        (top1,) = losses.accuracy_topk(logits.detach(), y, ks=(1,))
        return {"loss": float(loss.detach()), "top1": float(top1) / 100.0, "count": len(batch[1])}

    # ------------------------------------------------------------------------------------------ evaluation
    def eval_batch(self, images: np.ndarray, labels: np.ndarray, variant: str = "val") -> Dict[str, float]:
        self.model.set_path(self.eval_path(variant))
        return eval_sums(self.backend, self.model, images, labels, self.topk)
