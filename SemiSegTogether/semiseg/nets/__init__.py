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
    try:
        net = _REGISTRY[name](**args)
    except TypeError as exc:
        raise ModelError(f"architecture {name!r} cannot be built with arguments {args}: {exc}") from exc
    net.semiseg_arch = {"name": name, "args": dict(args)}
    return net


def _load_builtin() -> None:
    # Imported lazily so that adding a network is one module plus one @register_network line.
    from semiseg.nets import registry  # noqa: F401
