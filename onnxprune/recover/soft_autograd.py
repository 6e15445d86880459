"""Soft coefficients with real gradients: the gated reference (the mask oracle's model, gates
as an input) runs in torch, each group's coefficient sets its units' gates through a sigmoid
of their position in the group's removal order, and the application metric back-propagates
into the coefficients. One forward and one backward pass per step, whatever the number of
groups (finite differences need one evaluation per group).

Differentiable forms of the built-in metrics: psnr, mse, cosine and kl as they are; accuracy
through the cross-entropy of the labels (its smooth surrogate). A user metric has no torch
form: ``NotDifferentiable`` (the caller falls back to finite differences).
"""

from __future__ import annotations

import numpy as np

from ..progress import task
from ..search.evaluate import Evaluator
from ..search.quality import LABEL_KEYS
from ..select.common import Space, Target
from ..verify.oracle import GATES

BATCH = 64  # samples per step (a random mini-batch when there are more)


class NotDifferentiable(Exception):
    """The metric or the graph has no torch form; use finite differences."""


def _torch_metric(name: str):
    import torch

    from ..search.quality import is_distribution
    from .distill_data import log_dist

    def image(batch):
        for key, value in batch.items():
            if key not in LABEL_KEYS and value.is_floating_point():
                return value
        raise NotDifferentiable("psnr/mse need a float input")

    def per_sample_mse(out, x):
        return ((out - x) ** 2).reshape(len(out), -1).mean(1)

    def psnr(outs, batch, ref, peak):
        mse = torch.clamp(per_sample_mse(outs[0], image(batch)), min=1e-12)
        return (10.0 * torch.log10(peak**2 / mse)).mean()

    def mse(outs, batch, ref, peak):
        return -per_sample_mse(outs[0], image(batch)).mean()  # as a utility

    def cosine(outs, batch, ref, peak):
        sims = []
        for o, r in zip(outs, ref, strict=True):
            a, b = o.reshape(len(o), -1), r.reshape(len(r), -1)
            sims.append(torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12))
        return torch.cat(sims).mean()

    def kl(outs, batch, ref, peak):
        probs = is_distribution(ref[0].detach().numpy())  # as search.quality.kl decides
        lp, lq = log_dist(ref[0], probs), log_dist(outs[0], probs)
        return -(lp.exp() * (lp - lq)).sum(-1).mean()  # as a utility

    def accuracy(outs, batch, ref, peak):
        labels = next((batch[k] for k in LABEL_KEYS if k in batch), None)
        if labels is None:
            raise NotDifferentiable("accuracy needs labels")
        logits = outs[0].reshape(-1, outs[0].shape[-1])
        return -torch.nn.functional.cross_entropy(logits, labels.reshape(-1).long())

    table = {"psnr": psnr, "mse": mse, "cosine": cosine, "kl": kl, "accuracy": accuracy}
    if name not in table:
        raise NotDifferentiable(f"metric {name} has no torch form")
    return table[name]


def soft_autograd(space: Space, ev: Evaluator, target: Target, tol: float = 0.02,
                  steps: int = 60, lr: float = 0.05, temperature: float = 1.0,
                  seed: int = 0) -> tuple[np.ndarray, dict]:
    """Coefficients by Adam on -utility + mu * (reduction - target)^2, gradients by autograd
    through the gated graph; then hard masks repaired to the tolerance as ``soft_gradient``
    does. Raises ``NotDifferentiable`` before any work when there is no torch form."""
    try:
        import torch

        from .torch_bridge import TorchGraph
    except ImportError as err:
        raise NotDifferentiable(f"torch is not installed ({err})") from None
    from ..select.soft import hard_cut, settle, shared_start, soft_gates, target_shares

    if ev.metric.on_model or not all(ev.axes.get(k) in (0, None) for k in ev.batch):
        raise NotDifferentiable("the metric runs the model itself or the data is not batch-first")
    if ev.static_batch is not None and ev.n < ev.static_batch:
        raise NotDifferentiable("fewer samples than the model's fixed batch")
    fn = _torch_metric(ev.metric.name if ev.metric.builtin else "")
    try:
        graph = TorchGraph(ev.oracle.model)
    except NotImplementedError as err:
        raise NotDifferentiable(str(err)) from None
    for p in graph.params.values():
        p.requires_grad_(False)

    c0 = shared_start(space, target)
    share = torch.tensor(target_shares(space, target), dtype=torch.float64)
    scale = max(abs(ev.metric.utility(ev.base)), 1.0)
    floats = [v for k, v in ev.batch.items() if k not in LABEL_KEYS and v.dtype.kind == "f"]
    peak = 1.0 if not floats or float(np.max(floats[0])) <= 1.0 + 1e-6 else float(
        np.max(np.abs(floats[0])))  # as the numpy psnr takes it

    positions = [torch.arange(g.order.size, dtype=torch.float32) + 0.5 for g in space.groups]
    data = {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in ev.batch.items()}
    names = [k for k in ev.inputs]
    read = ev.read  # the outputs the metric reads (None: all)
    ref = [torch.as_tensor(np.ascontiguousarray(r)) for r in ev.reference]
    ref = ref if read is None else [ref[i] for i in read]
    n = ev.n
    rows = ev.static_batch or min(n, BATCH)
    rng = np.random.default_rng(seed)

    c = torch.tensor(c0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([c], lr=lr)
    history = []
    from .torch_threads import torch_threads

    with torch_threads(1), task("soft coefficients (autograd)", steps) as advance:
        for step in range(1, steps + 1):
            pick = torch.as_tensor(np.sort(rng.choice(n, size=rows, replace=False))
                                   if rows < n else np.arange(n))
            batch = {k: (v[pick] if ev.axes.get(k) == 0 else v) for k, v in data.items()}
            gates = torch.ones(space.analysis.num_units, dtype=torch.float32)
            for order, value in soft_gates(space, c.float(), positions,
                                           lambda x: torch.sigmoid(x / temperature)):
                gates = gates.index_put((torch.as_tensor(order, dtype=torch.long),), value)
            outs = graph.run({**{k: batch[k] for k in names}, GATES: gates[None]})
            outs = outs if read is None else [outs[i] for i in read]
            util = fn(outs, batch, [r[pick] for r in ref], peak)
            mu = 10.0 * (1 + step / 10)  # the penalty stiffens as the search goes on
            miss = share @ c - target.fraction
            loss = -util.double() / scale + mu * miss**2
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                c.clamp_(0.0, 1.0)
            history.append(float(util.detach()))
            advance()
    coeffs = c.detach().numpy().astype(np.float64)
    coeffs = settle(space, ev, coeffs, target, tol)
    return hard_cut(space, coeffs), {"coefficients": coeffs, "evaluations": ev.evals,
                                  "history": history, "method": "autograd"}
