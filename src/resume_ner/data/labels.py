"""Label names: raw annotation labels -> canonical entity types -> the IOB2 label list of a model."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

OUTSIDE = "O"


def canonical_label(raw: str, label_map: dict[str, str]) -> str | None:
    """The canonical type of ``raw`` under ``label_map`` (None when unknown); identity when the map is empty."""
    if not label_map:
        return raw
    if raw in label_map:
        return label_map[raw]
    if raw in label_map.values():  # already canonical (e.g. data written by `data convert`)
        return raw
    return None


@dataclass(frozen=True)
class LabelScheme:
    """Entity types and their IOB2 labels ``O, B-X, I-X, ...`` in a stable order (saved with every model)."""

    entity_types: tuple[str, ...]
    labels: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        labels = [OUTSIDE]
        for etype in self.entity_types:
            labels += [f"B-{etype}", f"I-{etype}"]
        object.__setattr__(self, "labels", tuple(labels))

    @classmethod
    def from_types(cls, types: Iterable[str]) -> LabelScheme:
        """Scheme over the sorted unique ``types``."""
        return cls(tuple(sorted(set(types))))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    def begin_id(self, etype: str) -> int:
        """Id of ``B-etype``."""
        return 1 + 2 * self.entity_types.index(etype)

    def inside_id(self, etype: str) -> int:
        """Id of ``I-etype``."""
        return 2 + 2 * self.entity_types.index(etype)

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": "IOB2", "entity_types": list(self.entity_types), "labels": list(self.labels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelScheme:
        return cls(tuple(data["entity_types"]))


def scheme_for(label_map: dict[str, str], seen_types: Iterable[str] = ()) -> LabelScheme:
    """The scheme of a dataset: every canonical type of the map, or (empty map) every type seen in the data."""
    if label_map:
        return LabelScheme.from_types(label_map.values())
    return LabelScheme.from_types(seen_types)
