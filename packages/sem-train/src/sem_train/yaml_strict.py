"""The strict YAML of config files: a safe loader without anchors or aliases, and the check
for a key given twice in one mapping (YAML and JSON parsers keep the last value silently).

Shared by the training config reader (:func:`sem_train.config.load_config`) and the
benchmark config reader (:mod:`sem_train.evaluation.config`). No torch is imported here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["duplicate_key", "safe_yaml_loader"]


#: A number with an exponent that YAML 1.1 (PyYAML) reads as text because it has no dot or
#: no sign in the exponent (``1e-4``, ``1e3``, ``2.5e3``); YAML 1.2 and JSON read a number.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


def safe_yaml_loader() -> tuple[Any, type]:
    """(yaml module, safe loader refusing anchors and aliases): the one loader for config files.

    Numbers with an exponent are numbers, as in YAML 1.2 and JSON: PyYAML's YAML 1.1 reads
    ``warmup_steps: 1e3`` as the text ``'1e3'``, which an integer field refused (``got
    '1e3'``) while ``lr: 1e-4`` passed only because pydantic converts text to a float."""
    import yaml

    class _NoAliasLoader(yaml.SafeLoader):
        """Safe YAML without anchors or aliases: a few hundred bytes of aliases can expand to
        gigabytes, and a training config never needs them."""

        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise yaml.MarkedYAMLError(
                    problem="YAML anchors and aliases (& and *) are not accepted in config files",
                    problem_mark=event.start_mark,
                )
            return super().compose_node(parent, index)

    _NoAliasLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789.")
    )
    return yaml, _NoAliasLoader


def duplicate_key(text: str, path: str | Path) -> str | None:
    """The first key given twice in one mapping of config ``text`` (YAML, or JSON read as
    YAML), as ``"<file>, line N: duplicate key 'a.b' (first on line M); give each key once"``;
    None without one (or when ``text`` does not parse: the reader's own error names that).
    The parsers keep the last value silently, while an unknown key is refused."""
    yaml, loader = safe_yaml_loader()
    try:
        root = yaml.compose(text, Loader=loader)
    except yaml.YAMLError:
        return None
    todo: list[tuple[Any, tuple[str, ...]]] = [(root, ())]
    while todo:
        node, prefix = todo.pop(0)
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in node.value:
                key = str(k.value)
                line = k.start_mark.line + 1
                if key in seen:
                    name = ".".join((*prefix, key))
                    return (
                        f"{path}, line {line}: duplicate key '{name}' (first on line "
                        f"{seen[key]}); give each key once"
                    )
                seen[key] = line
                todo.append((v, (*prefix, key)))
        elif isinstance(node, yaml.SequenceNode):
            todo += [(v, (*prefix, str(i))) for i, v in enumerate(node.value)]
    return None
