"""The PC-DARTS search in PyTorch: the architecture step (first or second order) and the weight step.

Twin of ``paddle_impl/tasks/pcdarts_search.py`` (same class, same methods, same formulas); the declarations, the
genotype bookkeeping and the files are in ``common/tasks/pcdarts_search.py``, the loop is ``common/engine.py``.
Gradients are taken with ``torch.autograd.grad`` with respect to exactly the tensors a step updates, so the
architecture step leaves no gradient on any weight (and computes no weight gradient it does not need).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

import numpy as np
import torch

from common.specs.pcdarts import ARCH_NAMES
from common.tasks import Batch, NonFiniteError
from common.tasks.pcdarts_search import PCDartsSearch
from torch_impl import layout, losses, optim
from torch_impl.tasks.classification import all_finite, eval_sums


class Task(PCDartsSearch):
    def __init__(self, backend, model: torch.nn.Module, cfg, spec=None, for_eval: bool = False):
        super().__init__(cfg, for_eval=for_eval)
        self.backend = backend
        self.model = model
        self.ema = None
        self.optimizers = {}
        named = layout.trainable_named_parameters(model)
        self.weights: List[Tuple[str, torch.Tensor]] = [(n, p) for n, p in named if n not in ARCH_NAMES]
        self.arch: List[torch.Tensor] = model.arch_parameters()
        if not for_eval:
            self.optimizers = {
                "weights": optim.build_optimizer(cfg, self.weights, model=model),
                "arch": optim.build_optimizer(cfg, [(n, p) for n, p in named if n in ARCH_NAMES], model=model,
                                              node="ARCH_OPTIM"),
            }
        self._shadow = None  # the float64 copy for PCDARTS.HVP finite_difference_float64

    # ------------------------------------------------------------------------------------------ pieces
    def loss_on(self, batch: Batch, model=None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, logits, labels)`` of ``model`` (default: the search network) on ``batch`` in training mode."""
        model = self.model if model is None else model
        if not model.training:
            model.train()
        first = next(model.parameters())
        x = torch.from_numpy(np.ascontiguousarray(batch[0])).to(device=first.device, dtype=first.dtype)
        y = torch.from_numpy(np.asarray(batch[1], dtype=np.int64)).to(first.device)
        logits = model(x)
        return losses.cross_entropy(logits, y), logits, y

    def _bn_buffers(self) -> List[torch.Tensor]:
        return [b for _, b in self.model.named_buffers()]

    def arch_gradient(self, train: Batch, search: Batch, eta: float) -> Tuple[List[torch.Tensor], float, float]:
        """``(d loss / d arch, validation loss, validation top-1 fraction)``: first order, or second order with
        ``PCDARTS.UNROLLED`` (``eta`` = the weights' current LR)."""
        if not self.unrolled:
            loss, logits, y = self.loss_on(search)
            grads = torch.autograd.grad(loss, self.arch)
            return list(grads), float(loss.detach()), _top1(logits, y)
        return self._unrolled_gradient(train, search, eta)

    def _unrolled_gradient(self, train: Batch, search: Batch, eta: float):
        params = [p for _, p in self.weights]
        opt = self.optimizers["weights"]
        mu = float(opt.hyper.get("momentum", 0.0))
        decay = {n: g["weight_decay"] for g in opt.param_groups for n, _ in g["params"]}
        theta = [p.detach().clone() for p in params]
        # 1. w' = theta - eta * (mu * momentum + dL_train/dw + wd * theta): one SGD step, unclipped (upstream)
        loss_t, _, _ = self.loss_on(train)
        g_train = torch.autograd.grad(loss_t, params, allow_unused=True)
        self._average([g for g in g_train if g is not None])  # a multi-process run: the global batch's step
        del loss_t  # paddle keeps a graph's saved tensors while its loss lives: drop each loss once differentiated
        with torch.no_grad():
            for (name, p), th, g in zip(self.weights, theta, g_train):
                d = (torch.zeros_like(th) if g is None else g) + decay[name] * th
                buf = opt.state.get(name, {}).get("momentum")
                p.copy_(th - eta * (d if buf is None else mu * buf + d))
        # 2. at w': dL_val/da and v = dL_val/dw'; the unrolled forward's BN statistics are discarded (upstream runs
        #    it on a copy of the network)
        saved = [b.detach().clone() for b in self._bn_buffers()]
        loss_v, logits, y = self.loss_on(search)
        grads = torch.autograd.grad(loss_v, self.arch + params, allow_unused=True)
        loss_value, top1 = float(loss_v.detach()), _top1(logits, y)
        del loss_v, logits
        dalpha = list(grads[: len(self.arch)])
        v = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads[len(self.arch):])]
        self._average(v)
        with torch.no_grad():
            for b, s in zip(self._bn_buffers(), saved):
                b.copy_(s)
            for p, th in zip(params, theta):
                p.copy_(th)
        # 3. finite-difference Hessian-vector product at theta: (dL_train(w+)/da - dL_train(w-)/da) / 2R
        implicit = self._hessian_vector(v, theta, train)
        return [da - eta * ig for da, ig in zip(dalpha, implicit)], loss_value, top1

    def _average(self, tensors) -> None:
        """In a multi-process run: the mean over the ranks, in place (the unrolled step and ``v`` are the global
        batch's, as in one process; the optimizers average the gradients they step with themselves)."""
        group = self.backend.dist
        if group is not None:
            group.average_(tensors)

    def _hessian_vector(self, v: List[torch.Tensor], theta: List[torch.Tensor], train: Batch):
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in v])))
        R = self.finite_difference_step(norm)
        if self.hvp == "finite_difference_float64":
            net = self._float64_copy()
            net_params = [p for n, p in layout.trainable_named_parameters(net) if n not in ARCH_NAMES]
            with torch.no_grad():
                for a, b in zip(net.arch_parameters(), self.arch):
                    a.copy_(b)
            theta64 = [t.double() for t in theta]
            v64 = [t.double() for t in v]
            arch = net.arch_parameters()
        else:
            net, net_params, theta64, v64, arch = self.model, [p for _, p in self.weights], theta, v, self.arch
        out = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, th, d in zip(net_params, theta64, v64):
                    p.copy_(th + (sign * R) * d)
            loss, _, _ = self.loss_on(train, model=net)
            out.append(torch.autograd.grad(loss, arch))
            del loss
        with torch.no_grad():
            for p, th in zip(net_params, theta64):
                p.copy_(th)
        return [((gp - gm) / (2 * R)).to(a.dtype) for gp, gm, a in zip(out[0], out[1], self.arch)]

    def _float64_copy(self) -> torch.nn.Module:
        if self._shadow is None:
            from torch_impl.models.pcdarts import SearchNetwork

            self._shadow = SearchNetwork(self.model.spec).to(device=next(self.model.parameters()).device,
                                                             dtype=torch.float64)
        layout.load_neutral(self._shadow, {k: v.astype(np.float64) for k, v in
                                           layout.state_to_neutral(self.model).items()}, "search network")
        return self._shadow

    # ------------------------------------------------------------------------------------------ the step
    def arch_step(self, train: Batch, search: Batch, lrs: Mapping[str, float]) -> None:
        grads, loss, top1 = self.arch_gradient(train, search, lrs["weights"])
        if not (np.isfinite(loss) and bool(all_finite(grads))):
            raise NonFiniteError(f"non-finite architecture gradient or validation loss ({loss:.4g})")
        opt = self.optimizers["arch"]
        for p, g in zip(self.arch, grads):
            p.grad = g.detach()
        if self.arch_grad_clip > 0:
            opt.clip_grad_norm(self.arch_grad_clip)
        opt.step(lrs["arch"])
        opt.zero_grad()
        self.record_arch(loss, top1, len(search[1]))

    def weight_step(self, train: Batch, lr: float) -> Dict[str, float]:
        loss, logits, y = self.loss_on(train)
        params = [p for _, p in self.weights]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        finite = torch.stack([torch.isfinite(loss.detach()), all_finite([logits.detach()]), all_finite(grads)])
        finite = finite.cpu().numpy()
        if not finite.all():  # the weights are not touched
            what = [w for w, ok in zip(("loss", "logits", "gradients"), finite) if not ok]
            raise NonFiniteError(f"non-finite {' and '.join(what)} (loss {float(loss.detach()):.4g})")
        opt = self.optimizers["weights"]
        for p, g in zip(params, grads):
            p.grad = g
        if self.grad_clip > 0:
            opt.clip_grad_norm(self.grad_clip)
        opt.step(lr)
        opt.zero_grad()
        return {"loss": float(loss.detach()), "top1": _top1(logits, y), "count": len(train[1])}

    def train_step(self, batches: Mapping[str, Batch], lrs: Mapping[str, float], step: int) -> Dict[str, float]:
        if self.arch_active:
            self.arch_step(batches["train"], batches["search"], lrs)
        return self.weight_step(batches["train"], lrs["weights"])

    # ------------------------------------------------------------------------------------------ evaluation
    def eval_batch(self, images: np.ndarray, labels: np.ndarray, variant: str = "val") -> Dict[str, float]:
        return eval_sums(self.backend, self.model, images, labels, self.topk)


def _top1(logits: torch.Tensor, y: torch.Tensor) -> float:
    (top1,) = losses.accuracy_topk(logits.detach(), y, ks=(1,))
    return float(top1) / 100.0
