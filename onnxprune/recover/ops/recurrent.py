"""RNN, GRU and LSTM as differentiable torch loops, computed the way onnxruntime computes them.

A direction projects the inputs of every step at once (``X W^T``), then loops over the steps:
each adds ``H R^T`` and runs the cell. Gates are laid out as ONNX lays them (LSTM ``i, o, f,
c``; GRU ``z, r, h``); ``clip`` bounds every gate's input to its activation (not the LSTM
cell state). With ``sequence_lens`` a batch entry stops at its length: its state is held, its
outputs are zero, and the reverse direction starts at its last valid step; ``Y_h``/``Y_c`` are
the states after the last valid step (zero for an empty sequence, as onnxruntime has them).
``layout=1`` (batch first) is transposed in and out; onnxruntime itself rejects it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .base import Node, register

Act = Callable[[torch.Tensor], torch.Tensor]
State = tuple[torch.Tensor, ...]

_DEFAULT_ACTIVATIONS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"],
                        "LSTM": ["Sigmoid", "Tanh", "Tanh"]}

# onnxruntime's activation table: name -> (f(x, alpha, beta), takes alpha, takes beta)
_ACTIVATIONS = {
    "relu": (lambda x, a, b: torch.relu(x), False, False),
    "tanh": (lambda x, a, b: torch.tanh(x), False, False),
    "sigmoid": (lambda x, a, b: torch.sigmoid(x), False, False),
    "affine": (lambda x, a, b: a * x + b, True, True),
    "leakyrelu": (lambda x, a, b: torch.where(x >= 0, x, a * x), True, False),
    "thresholdedrelu": (lambda x, a, b: torch.where(x > a, x, torch.zeros_like(x)), True, False),
    "scaledtanh": (lambda x, a, b: a * torch.tanh(b * x), True, True),
    "hardsigmoid": (lambda x, a, b: torch.clamp(a * x + b, 0.0, 1.0), True, True),
    "elu": (lambda x, a, b: torch.where(x >= 0, x, a * (torch.exp(x) - 1)), True, False),
    "softsign": (lambda x, a, b: x / (1 + x.abs()), False, False),
    "softplus": (lambda x, a, b: torch.log(1 + torch.exp(x)), False, False),  # (sic: no log1p)
}
# alpha/beta when the attributes run out (onnxruntime: these three, every other one 0)
_ACTIVATION_DEFAULTS = {"leakyrelu": (0.01, 0.0), "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0.0)}


def _activations(n: Node, num_dir: int) -> list[list[Act]]:
    """The activation functions of each direction, with their alpha/beta: as onnxruntime,
    ``activation_alpha``/``activation_beta`` are consumed in order, one value per function
    that takes one (both directions' functions in one list), then the defaults."""
    per = len(_DEFAULT_ACTIVATIONS[n.op_type])
    names = list(n.get("activations") or _DEFAULT_ACTIVATIONS[n.op_type] * num_dir)
    if len(names) == per:  # one direction's list serves both
        names *= num_dir
    names = names[: per * num_dir]  # RNN's schema default lists two for one direction
    alphas, betas = list(n.get("activation_alpha") or []), list(n.get("activation_beta") or [])
    acts = []
    for name in names:
        entry = _ACTIVATIONS.get(name.lower())
        if entry is None:
            raise NotImplementedError(f"{n.op_type} node {n.name!r}: activation {name!r}")
        fn, takes_alpha, takes_beta = entry
        alpha, beta = _ACTIVATION_DEFAULTS.get(name.lower(), (0.0, 0.0))
        alpha = alphas.pop(0) if takes_alpha and alphas else alpha
        beta = betas.pop(0) if takes_beta and betas else beta
        acts.append(functools.partial(fn, a=alpha, b=beta))
    return [acts[d * per:(d + 1) * per] for d in range(num_dir)]


def _clipper(n: Node) -> Act:
    clip = n.get("clip")
    if clip is None:
        return lambda x: x
    return lambda x: torch.clamp(x, -clip, clip)


def _plus(x: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return x if b is None else x + b


# -- one step of each cell: (the step's input projection x_t W^T, state) -> new state ---------


def _rnn_cell(n: Node, r: torch.Tensor, bias: torch.Tensor | None, acts: list[Act]):
    """H = f(H R^T + x W^T + Wb + Rb)."""
    clip, (f,) = _clipper(n), acts
    wrb = None if bias is None else sum(bias.chunk(2))

    def step(xw: torch.Tensor, h: torch.Tensor) -> State:
        return (f(clip(h @ r.t() + _plus(xw, wrb))),)

    return step


def _gru_cell(n: Node, r: torch.Tensor, bias: torch.Tensor | None, acts: list[Act]):
    """z, r = f(x W^T + H R^T + Wb + Rb); the candidate is g(x Wh^T + (r * H) Rh^T + Wbh + Rbh),
    or with ``linear_before_reset`` g(x Wh^T + r * (H Rh^T + Rbh) + Wbh); H = (1-z) h + z H."""
    clip, (f, g) = _clipper(n), acts
    hidden = r.shape[-1]
    r_zr, r_h = r[: 2 * hidden], r[2 * hidden:]
    before_reset = bool(n.get("linear_before_reset", 0))
    wb, rb = (None, None) if bias is None else bias.chunk(2)
    b_zr = None if bias is None else (wb + rb)[: 2 * hidden]
    b_h = None if bias is None else (wb[2 * hidden:] if before_reset else (wb + rb)[2 * hidden:])
    rb_h = None if bias is None else rb[2 * hidden:]

    def step(xw: torch.Tensor, h: torch.Tensor) -> State:
        z, reset = f(clip(_plus(xw[:, : 2 * hidden] + h @ r_zr.t(), b_zr))).chunk(2, -1)
        if before_reset:
            cand = xw[:, 2 * hidden:] + reset * _plus(h @ r_h.t(), rb_h)
        else:
            cand = xw[:, 2 * hidden:] + (reset * h) @ r_h.t()
        cand = g(clip(_plus(cand, b_h)))
        return ((1 - z) * cand + z * h,)

    return step


def _lstm_cell(n: Node, r: torch.Tensor, bias: torch.Tensor | None, peep: torch.Tensor | None,
               acts: list[Act]):
    """i, f = f(x W^T + H R^T + P * C + Wb + Rb) (with ``input_forget``, f = 1 - i),
    c = g(...), C' = f C + i c, o = f(... + P * C'), H = o h(C')."""
    clip, (f, g, h_act) = _clipper(n), acts
    coupled = bool(n.get("input_forget", 0))
    b_i = b_o = b_f = b_c = p_i = p_o = p_f = None
    if bias is not None:
        wb, rb = bias.chunk(2)
        b_i, b_o, b_f, b_c = (wb + rb).chunk(4)
    if peep is not None:
        p_i, p_o, p_f = peep.chunk(3)

    def step(xw: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> State:
        i, o, fg, cand = (xw + h @ r.t()).chunk(4, -1)
        i = f(clip(_plus(i if p_i is None else i + c * p_i, b_i)))
        if coupled:
            fg = 1 - i
        else:
            fg = f(clip(_plus(fg if p_f is None else fg + c * p_f, b_f)))
        c = c * fg + i * g(clip(_plus(cand, b_c)))
        o = f(clip(_plus(o if p_o is None else o + c * p_o, b_o)))
        return h_act(c) * o, c

    return step


def _run(step, xw: torch.Tensor, state: State, lens: torch.Tensor | None,
         reverse: bool) -> tuple[torch.Tensor, State]:
    """All steps of one direction: the hidden outputs ``[T, B, H]`` and the final state.
    Entries past their length hold their state and output zeros."""
    steps = range(xw.shape[0])
    outs = []
    for t in reversed(steps) if reverse else steps:
        new = step(xw[t], *state)
        if lens is not None:
            valid = (t < lens).unsqueeze(1)
            new = tuple(torch.where(valid, a, b) for a, b in zip(new, state, strict=True))
            outs.append(torch.where(valid, new[0], torch.zeros_like(new[0])))
        else:
            outs.append(new[0])
        state = new
    if lens is not None:  # onnxruntime gives an empty sequence a zero final state
        state = tuple(torch.where((lens > 0).unsqueeze(1), s, torch.zeros_like(s)) for s in state)
    return torch.stack(outs[::-1] if reverse else outs), state


@register("RNN", "GRU", "LSTM")
def recurrent(n: Node, x: torch.Tensor, w: torch.Tensor, r: torch.Tensor,
              b: torch.Tensor | None = None, lens: torch.Tensor | None = None,
              h0: torch.Tensor | None = None, c0: torch.Tensor | None = None,
              peep: torch.Tensor | None = None):
    """Outputs ``Y`` ``[T, D, B, H]``, ``Y_h`` ``[D, B, H]`` (and ``Y_c``), batch first with
    ``layout=1``; only as many as the node has."""
    batch_first = bool(n.get("layout", 0))
    if batch_first:
        x = x.transpose(0, 1)
        h0 = None if h0 is None else h0.transpose(0, 1)
        c0 = None if c0 is None else c0.transpose(0, 1)
    num_dir, hidden, batch = w.shape[0], r.shape[-1], x.shape[1]
    acts = _activations(n, num_dir)
    lens = None if lens is None else lens.to(device=x.device, dtype=torch.int64)
    zeros = x.new_zeros(num_dir, batch, hidden)
    h0 = zeros if h0 is None else h0
    c0 = zeros if c0 is None else c0
    ys, finals = [], []
    for d in range(num_dir):
        bias = None if b is None else b[d]
        if n.op_type == "RNN":
            step, state = _rnn_cell(n, r[d], bias, acts[d]), (h0[d],)
        elif n.op_type == "GRU":
            step, state = _gru_cell(n, r[d], bias, acts[d]), (h0[d],)
        else:
            step = _lstm_cell(n, r[d], bias, None if peep is None else peep[d], acts[d])
            state = (h0[d], c0[d])
        reverse = n.get("direction", "forward") == "reverse" or d == 1
        y, state = _run(step, x @ w[d].t(), state, lens, reverse)
        ys.append(y)
        finals.append(state)
    y = torch.stack(ys, 1)  # [T, D, B, H]
    states = [torch.stack([s[k] for s in finals]) for k in range(len(finals[0]))]  # [D, B, H]
    if batch_first:
        y = y.permute(2, 0, 1, 3)
        states = [s.transpose(0, 1) for s in states]
    return (y, *states)[: n.n_outputs]
