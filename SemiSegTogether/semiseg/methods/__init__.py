"""Method registry. A new method is one file in this folder and one line in `_METHODS`."""

from __future__ import annotations

import importlib

from semiseg.errors import ConfigError
from semiseg.methods.base import COMMON_DEFAULTS, COMMON_HELP, Method, MethodContext

# name → "module:Class"; imported on demand so a method's heavy dependencies load only when used.
_METHODS = {
    "supervised": "semiseg.methods.supervised:Supervised",
    "mean-teacher": "semiseg.methods.mean_teacher:MeanTeacher",
    "ad": "semiseg.methods.ad:AggregatingDecoupling",
    "versemi": "semiseg.methods.versemi:VerSemi",
    "dual-contrast": "semiseg.methods.dual_contrast:DualContrast",
}


def method_names() -> list[str]:
    return list(_METHODS)


def method_class(name: str) -> type[Method]:
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(_METHODS)}")
    module, cls = _METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_method(name: str, context: MethodContext) -> Method:
    return method_class(name)(context)


def describe_methods() -> list[dict]:
    """[{name, description, options: {option: {"default", "help"}}, authors_recipe: {option: value}}] for
    `semiseg methods` and Slicer; `authors_recipe` holds the authors' values where the defaults differ."""
    out = []
    for name in _METHODS:
        cls = method_class(name)
        helps = {**COMMON_HELP, **cls.option_help}
        out.append({"name": name, "description": cls.description,
                    "options": {k: {"default": v, "help": helps.get(k, "")}
                                for k, v in {**cls.defaults, **COMMON_DEFAULTS}.items()},
                    "authors_recipe": dict(cls.authors_recipe)})
    return out


__all__ = ["Method", "MethodContext", "build_method", "method_names", "method_class", "describe_methods"]
