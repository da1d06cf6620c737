"""Model fields that refuse a value pydantic's lax mode would silently take as another.

pydantic takes ``True`` as 1 for an int or a float field (``iterations=True`` would run one
iteration). :class:`NoBoolNumbers` refuses a bool for every number, also inside unions,
tuples, lists, mappings and nested models given as mappings; a subclass adds rules by
extending :attr:`NoBoolNumbers.value_rules` (:func:`empty_path`: ``root: ""`` would be the
current folder). The same walk serves every rule, so each rule only judges one value.
sem-models keeps its own copy of the bool rule (:mod:`sem_models.config`) because it depends
on no other package of the workspace.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ValidationError, ValidationInfo, field_validator
from pydantic_core import InitErrorDetails

__all__ = [
    "Loc",
    "NoBoolNumbers",
    "ValueRule",
    "bool_for_number",
    "empty_path",
    "refuse_taken_as_another",
    "taken_as_another",
]

#: Where a value sits below the field validated: field names and item indices.
Loc = tuple[str | int, ...]
#: A rule judges one value against its annotation (``Annotated`` removed): its errors (empty:
#: accepted, look no further) or ``None`` (not the rule's case: the walk looks inside).
ValueRule = Callable[[Any, Any, Loc], list[InitErrorDetails] | None]

_UNIONS = (typing.Union, types.UnionType)


def _expected(choices: tuple[Any, ...]) -> str:
    """``1``, ``1 or 3``, ``1, 2 or 3``: pydantic's wording of a Literal's values."""
    shown = [repr(c) for c in choices]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def bool_for_number(value: Any, tp: Any, loc: Loc) -> list[InitErrorDetails] | None:
    """A bool (``True``, ``numpy.True_``) given for an int, a float or an integer Literal.

    The errors are pydantic's own (``int_type``, ``float_type``, ``literal_error``), so a bool
    reads as any other value that is no number. A union that admits a bool accepts it."""
    if not isinstance(value, bool | np.bool_):
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in _UNIONS:
        return [] if bool in args else None
    if tp is int or tp is float:
        return [InitErrorDetails(type=f"{tp.__name__}_type", loc=loc, input=value)]
    if origin is Literal and args and all(type(a) is int for a in args):
        ctx = {"expected": _expected(args)}
        return [InitErrorDetails(type="literal_error", loc=loc, input=value, ctx=ctx)]
    return []


def empty_path(value: Any, tp: Any, loc: Loc) -> list[InitErrorDetails] | None:
    """An empty string given for a ``Path``: pydantic would take it as the current folder."""
    if tp is Path and isinstance(value, str) and value == "":
        why = ValueError("must be a path, got '' (which would be the current folder)")
        return [InitErrorDetails(type="value_error", loc=loc, input=value, ctx={"error": why})]
    return None


def taken_as_another(
    value: Any,
    annotation: Any,
    rules: Sequence[ValueRule] = (bool_for_number,),
    loc: Loc = (),
) -> list[InitErrorDetails]:
    """An error at every place where ``value``, validated as ``annotation``, breaks one of
    ``rules``: also inside Optional and other unions (the first member that finds errors
    gives them), tuples, lists, mappings and nested models given as mappings (inside a
    :class:`NoBoolNumbers` model, only the rules it does not check itself)."""
    tp = annotation
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    for rule in rules:
        found = rule(value, tp, loc)
        if found is not None:
            return found
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in _UNIONS:
        for member in args:
            if member is not type(None):
                errors = taken_as_another(value, member, rules, loc)
                if errors:
                    return errors
        return []
    out: list[InitErrorDetails] = []
    if origin in (tuple, list) and isinstance(value, list | tuple):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            items = list(zip(value, args, strict=False))
        else:
            items = [(v, args[0] if args else Any) for v in value]
        for i, (v, item_type) in enumerate(items):
            out += taken_as_another(v, item_type, rules, (*loc, i))
    elif origin is dict and len(args) == 2 and isinstance(value, dict):
        for k, v in value.items():
            out += taken_as_another(v, args[1], rules, (*loc, str(k)))
    elif isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(value, dict):
        # a NoBoolNumbers model checks its own rules (in its own words: ParameterRanges names
        # the parameter's bounds); the walk applies only the others (all, for another
        # package's model: a PSF, sem_models' MoEConfig, ...)
        own = tp.value_rules if issubclass(tp, NoBoolNumbers) else ()
        left = tuple(rule for rule in rules if rule not in own)
        if left:
            for name, field in tp.model_fields.items():
                if name in value:
                    out += taken_as_another(value[name], field.annotation, left, (*loc, name))
    return out


def refuse_taken_as_another(
    value: Any, annotation: Any, title: str, rules: Sequence[ValueRule] = (bool_for_number,)
) -> None:
    """Raise :func:`taken_as_another`'s errors as a ValidationError titled ``title`` (each at
    its place below the field validated, which pydantic prepends)."""
    errors = taken_as_another(value, annotation, rules)
    if errors:
        raise ValidationError.from_exception_data(title, errors)


class NoBoolNumbers(BaseModel):
    """A model whose fields refuse what breaks :attr:`value_rules` (:func:`taken_as_another`):
    by default a bool for a number; bool fields take bools as usual."""

    #: The rules every field's value is checked against, before pydantic validates it.
    value_rules: ClassVar[tuple[ValueRule, ...]] = (bool_for_number,)

    @field_validator("*", mode="before")
    @classmethod
    def _nothing_taken_as_another(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            refuse_taken_as_another(value, annotation, cls.__name__, cls.value_rules)
        return value
