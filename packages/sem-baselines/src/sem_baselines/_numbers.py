"""The base of the package's pydantic settings models: a bool is no number.

pydantic's lax mode takes ``True`` as 1 (``get_restorer("richardson-lucy", iterations=True)``
ran one iteration). The rule is :class:`sem_models.config.NoBoolNumbers`'s, kept here because
importing ``sem_models`` would slow down a classical method's start (see the startup tests).
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ValidationError, ValidationInfo, field_validator
from pydantic_core import InitErrorDetails

__all__ = ["NoBoolNumbers", "bools_given_for_numbers"]


def _expected(choices: tuple[Any, ...]) -> str:
    """``1``, ``1 or 3``, ``1, 2 or 3``: pydantic's wording of a Literal's values."""
    shown = [repr(c) for c in choices]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def bools_given_for_numbers(
    value: Any, annotation: Any, loc: tuple[str | int, ...] = ()
) -> list[InitErrorDetails]:
    """An error at every place where ``value``, validated as ``annotation``, holds a bool
    (``True``, ``numpy.True_``) that pydantic's lax mode would take as a number: for an int,
    a float or an integer Literal, also inside Optional and other unions (unless they admit a
    bool), tuples, lists, mappings and nested models given as mappings (other than
    :class:`NoBoolNumbers` ones, which check themselves: a PSF or ``ranges`` given as a
    mapping is looked into). The errors are pydantic's own (``int_type``, ``float_type``,
    ``literal_error``): a bool reads as any other value that is no number."""
    tp = annotation
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    is_bool = isinstance(value, bool | np.bool_)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if is_bool and bool in members:
            return []
        for member in members:
            errors = bools_given_for_numbers(value, member, loc)
            if errors:
                return errors
        return []
    if is_bool:
        if tp is int or tp is float:
            return [InitErrorDetails(type=f"{tp.__name__}_type", loc=loc, input=value)]
        if origin is Literal and args and all(type(a) is int for a in args):
            ctx = {"expected": _expected(args)}
            return [InitErrorDetails(type="literal_error", loc=loc, input=value, ctx=ctx)]
        return []
    out: list[InitErrorDetails] = []
    if origin in (tuple, list) and isinstance(value, list | tuple):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            items = list(zip(value, args, strict=False))
        else:
            items = [(v, args[0] if args else Any) for v in value]
        for i, (v, item_type) in enumerate(items):
            out += bools_given_for_numbers(v, item_type, (*loc, i))
    elif origin is dict and len(args) == 2 and isinstance(value, dict):
        for k, v in value.items():
            out += bools_given_for_numbers(v, args[1], (*loc, str(k)))
    elif isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(value, dict):
        if not issubclass(tp, NoBoolNumbers):
            for name, field in tp.model_fields.items():
                if name in value:
                    out += bools_given_for_numbers(value[name], field.annotation, (*loc, name))
    return out


class NoBoolNumbers(BaseModel):
    """A model whose number fields refuse a bool (:func:`bools_given_for_numbers`): the base
    of every restorer's config, ``FitOptions`` and ``fit``'s keywords; bool fields (``clip``)
    take bools as usual."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            errors = bools_given_for_numbers(value, annotation)
            if errors:
                raise ValidationError.from_exception_data(cls.__name__, errors)
        return value
