"""Errors the user can act on. Each message names the file and the problem."""


class SemiSegError(Exception):
    """Base class: the CLI prints these without a traceback and exits non-zero."""


class DataError(SemiSegError):
    """An input image, label or dataset description is missing, unreadable or inconsistent."""


class ModelError(SemiSegError):
    """A model package is missing, corrupt, foreign or incompatible."""


class ConfigError(SemiSegError):
    """A training or prediction setting is invalid."""


class Interrupted(SemiSegError):
    """The user stopped the command (Ctrl-C, SIGTERM); the CLI exits with INTERRUPTED_EXIT_CODE."""


INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for Ctrl-C
