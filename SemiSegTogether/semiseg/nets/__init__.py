"""Network registry: every network a model package can hold is built here by name.

`build_network(name, **args)` stamps the result with `semiseg_arch = {"name", "args"}`, which the model
package stores in model.json so that a saved model is rebuilt without unpickling anything.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from semiseg.errors import ModelError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_network(name: str):
    def deco(factory):
        _REGISTRY[name] = factory
        return factory
    return deco


def network_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def build_network(name: str, **args) -> nn.Module:
    _load_builtin()
    if name not in _REGISTRY:
        raise ModelError(f"unknown architecture {name!r}; this engine knows {sorted(_REGISTRY)}")
    problem = _argument_problem(args)
    if problem:
        raise ModelError(f"architecture {name!r} cannot be built with arguments {args}: {problem}")
    try:
        net = _REGISTRY[name](**args)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"architecture {name!r} cannot be built with arguments {args}: {exc}") from exc
    net.semiseg_arch = {"name": name, "args": dict(args)}
    return net


# Arguments every built-in network shares, checked here so that a bad value is a clear error, not a
# tensor of negative size deep in PyTorch (or, for 0 filters, a network that trains to nothing).
_POSITIVE_INTS = ("in_channels", "n_filters")


def _argument_problem(args: dict) -> str | None:
    from semiseg.nets.vnet import NORMS
    for key in _POSITIVE_INTS:
        if key in args and not (isinstance(args[key], int) and not isinstance(args[key], bool) and args[key] >= 1):
            return f"{key} must be a whole number of at least 1, not {args[key]!r}"
    if "n_classes" in args and not (isinstance(args["n_classes"], int) and args["n_classes"] >= 2):
        return f"n_classes must be a whole number of at least 2 (background and one label), not {args['n_classes']!r}"
    if "norm" in args and args["norm"] not in NORMS:
        return f"unknown norm {args['norm']!r}; expected one of {', '.join(NORMS)}"
    if "dropout" in args and not (isinstance(args["dropout"], (int, float)) and 0 <= args["dropout"] < 1):
        return f"dropout must be at least 0 and less than 1, not {args['dropout']!r}"
    return None


def _load_builtin() -> None:
    # Imported lazily so that adding a network is one module plus one @register_network line.
    from semiseg.nets import registry  # noqa: F401
