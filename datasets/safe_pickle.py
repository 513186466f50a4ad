"""Read pickles from data folders without executing code.

A pickle names the functions and classes that rebuild its objects, and ``pickle.load`` imports and calls them:
a few-shot cache found in a downloaded or shared data folder could run anything. :func:`restricted_load` reads a
pickle with an unpickler that resolves only the names it is given, plus plain containers and scalars (which
pickle encodes without naming any global); any other name stops the load before anything is called.

Allow-lists:

* :data:`DATUM_GLOBALS`: Dassl's ``Datum``, the only class in CoOp's few-shot caches
  (``split_fewshot/shot_{K}-seed_{S}.pkl``) and ImageNet listings (``preprocessed.pkl``);
* :data:`NUMPY_GLOBALS`: numpy arrays and dtypes, as in CIFAR-100's python-version batches.

This module imports only the standard library; Dassl and numpy are imported when a pickle names them.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
from collections.abc import Mapping
from typing import Any, Callable, Union

from lamm_plugin.errors import UserError

__all__ = [
    "BUILTIN_GLOBALS",
    "DATUM_GLOBALS",
    "NUMPY_GLOBALS",
    "PickleLoadError",
    "UnsafePickleError",
    "restricted_load",
]

Resolver = Callable[[], Any]


class PickleLoadError(UserError, pickle.UnpicklingError):
    """A pickle from a data folder could not be read; the message names the file and what to do."""


class UnsafePickleError(PickleLoadError):
    """A pickle names a function or class outside the allow-list; nothing it names was imported or called."""


def _attr(module: str, name: str) -> Resolver:
    return lambda: getattr(importlib.import_module(module), name)


#: Types that pickles of plain data may name (protocols below 4 name ``set`` and ``frozenset``; Python 2
#: pickles say ``__builtin__``).
BUILTIN_GLOBALS: dict[tuple[str, str], Resolver] = {
    (module, name): _attr("builtins", name)
    for module in ("builtins", "__builtin__")
    for name in ("str", "int", "float", "bool", "list", "dict", "tuple", "set", "frozenset")
}

#: Dassl's ``Datum`` (its module as pickled, and the package that re-exports it).
DATUM_GLOBALS: dict[tuple[str, str], Resolver] = {
    ("dassl.data.datasets.base_dataset", "Datum"): _attr("dassl.data.datasets.base_dataset", "Datum"),
    ("dassl.data.datasets", "Datum"): _attr("dassl.data.datasets.base_dataset", "Datum"),
}


def _numpy_reconstruct() -> Any:
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy >= 2 moved numpy.core to numpy._core
    return core.multiarray._reconstruct


#: What numpy writes for an ndarray: ``_reconstruct(ndarray, shape, dtype)`` with the bytes as state.
NUMPY_GLOBALS: dict[tuple[str, str], Resolver] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): _attr("numpy", "ndarray"),
    ("numpy", "dtype"): _attr("numpy", "dtype"),
    ("_codecs", "encode"): _attr("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, allowed: Mapping[tuple[str, str], Resolver], **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        # Nothing is imported before the name is checked: importing a module can itself run code.
        resolver = self.allowed.get((module, name))
        if resolver is None:
            raise UnsafePickleError(f"{module}.{name}")
        return resolver()


def restricted_load(
    path: Union[str, os.PathLike],
    allowed: Mapping[tuple[str, str], Resolver],
    remedy: str,
    encoding: str = "ASCII",
) -> Any:
    """Unpickle ``path`` admitting only ``allowed`` globals, plain containers and scalars.

    Args:
        path: The pickle file.
        allowed: ``(module, name)`` -> function returning the object; :data:`BUILTIN_GLOBALS` is always added.
        remedy: What the user should do when the file cannot be read (e.g. delete it to regenerate it); it ends
            the error message.
        encoding: How to decode Python 2 strings (``latin1`` for numpy arrays written by Python 2).

    Returns:
        The unpickled object.

    Raises:
        UnsafePickleError: The pickle names anything else (it is refused before anything it names is called).
        PickleLoadError: The file is not a readable pickle (truncated, corrupt).
    """
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, {**BUILTIN_GLOBALS, **allowed}, encoding=encoding).load()
        except UnsafePickleError as err:
            raise UnsafePickleError(
                f"{path} asks to run {err}, which a data file has no reason to contain, so it was not loaded "
                f"(nothing in it was executed). {remedy}"
            ) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
            raise PickleLoadError(f"{path} is not a readable pickle ({type(err).__name__}: {err}). {remedy}") from err
