"""Per-component budgets: ``--ratio 0.5`` or ``--ratio "*=0.5,pi=0,encoder=0.3"``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..errors import UsageError

Budget = Mapping[str, float]  # component -> ratio; "*" is the default


def parse_ratio(spec: str | float | Mapping[str, float]) -> dict[str, float]:
    if isinstance(spec, Mapping):
        out = {str(k): float(v) for k, v in spec.items()}
    elif isinstance(spec, (int, float)):
        out = {"*": float(spec)}
    else:
        out = {}
        text = str(spec).strip()
        if "=" not in text:
            out["*"] = _number(text, text)
        else:
            for item in text.split(","):
                name, sep, value = item.partition("=")
                if not sep or not name.strip():
                    raise UsageError(f"{spec!r}: expected R or NAME=R,... (e.g. '*=0.5,pi=0')")
                out[name.strip()] = _number(value, spec)
    out.setdefault("*", 0.0)
    for name, r in out.items():
        if not 0.0 <= r < 1.0:
            raise UsageError(f"{r:g} is outside [0, 1)" if name == "*" else
                             f"{name}={r:g} is outside [0, 1)")
    return out


def _number(text: str, spec) -> float:
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{spec!r}: {text!r} is not a number") from None


def check_names(budget: Budget, components: Iterable[str]) -> None:
    known = set(components)
    unknown = sorted(set(budget) - known - {"*"})
    if unknown:
        raise UsageError(
            f"ratio names unknown component(s) {', '.join(unknown)}; "
            f"the model has: {', '.join(sorted(known))}"
        )


def ratio_for(budget: Budget, component: str | None) -> float:
    """A group in several components (coupled flows) gets the smallest of their ratios."""
    if component is None:
        return budget["*"]
    return min(budget.get(part, budget["*"]) for part in component.split("+"))
