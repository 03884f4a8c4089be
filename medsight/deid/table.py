"""The PS3.15 Annex E Table E.1-1 "Basic Profile" column, as shipped by ``dicom-anonymizer``.

``dicom-anonymizer`` keeps one Python module per edition of the standard
(``dicomanonymizer/dicom_anonymization_databases/dicomfields_<edition>.py``). Each module holds one
list per action of the Basic Profile column: ``D_TAGS``, ``Z_TAGS``, ``X_TAGS``, ``U_TAGS``,
``Z_D_TAGS``, ``X_Z_TAGS``, ``X_D_TAGS``, ``X_Z_D_TAGS``, ``X_Z_U_STAR_TAGS`` (and ``ALL_TAGS``,
their concatenation). An entry is ``(group, element)``, or ``(group, element, group_mask,
element_mask)`` for the repeating groups of the retired curve (50xx,xxxx) and overlay
(60xx,3000 / 60xx,4000) attributes: a tag matches when ``tag & mask == (group, element)``.
The option columns of Table E.1-1 are not in that package; ``profiles.py`` derives them.

We use the package for its data only; medsight's own engine applies the actions.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cache

from medsight.errors import ConfigError

EDITIONS = ("2023", "2024b", "2026c")
DEFAULT_EDITION = "2026c"

# The package's list name -> the action code as printed in Table E.1-1.
CATEGORY_ACTIONS = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}

# How a choice in the table is resolved. The standard lets the choice depend on the attribute's Type
# in the IOD (1: must have a value, 2: must be present, 3: optional). medsight does not carry the IOD
# definitions, so it picks the alternative that keeps the object valid whatever the Type is, which is
# also the least destructive one (a dummy or empty value instead of a missing attribute). None of the
# alternatives keeps the original value, so the choice never changes what is disclosed:
#   X/Z    -> Z   (Type 2 needs the attribute present; an empty value is valid for Types 2 and 3)
#   X/D    -> D   (Type 1 needs a value; a dummy is valid for Types 1 and 3)
#   Z/D    -> D   (Type 1 needs a value; a dummy is valid for Types 1 and 2)
#   X/Z/D  -> D   (a dummy is valid for Types 1, 2 and 3)
#   X/Z/U* -> U*  (the sequence is kept and every UID inside it is replaced by the U rule, so image
#                  references stay resolvable; the items are de-identified like any other dataset)
RESOLVE_CHOICE = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U*"}


def resolve(action: str) -> str:
    """The single action medsight applies for a table action (see RESOLVE_CHOICE)."""
    return RESOLVE_CHOICE.get(action, action)


@dataclass(frozen=True)
class MaskRule:
    group: int
    element: int
    group_mask: int
    element_mask: int
    action: str

    def matches(self, tag: int) -> bool:
        return ((tag >> 16) & self.group_mask) == self.group and (
            tag & 0xFFFF & self.element_mask
        ) == self.element


def lookup_action(exact: dict[int, str], masks: list[MaskRule], tag: int) -> str | None:
    """An exact entry wins over a masked range (e.g. 6000,3000 over 60xx,3000)."""
    action = exact.get(int(tag))
    if action is not None:
        return action
    return next((rule.action for rule in masks if rule.matches(int(tag))), None)


@dataclass
class ConfidentialityTable:
    """One edition's Basic Profile column: exact tags and masked tag ranges -> table action."""

    edition: str
    exact: dict[int, str] = field(default_factory=dict)
    masks: list[MaskRule] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.exact) + len(self.masks)

    def action_for(self, tag: int) -> str | None:
        """The table's action for ``tag`` (e.g. "X/Z"), or None if the table does not list it."""
        return lookup_action(self.exact, self.masks, tag)


@cache
def load_table(edition: str = DEFAULT_EDITION) -> ConfidentialityTable:
    """Load Table E.1-1 of ``edition`` from dicom-anonymizer's data modules."""
    if edition not in EDITIONS:
        raise ConfigError(f"unknown DICOM edition {edition!r}; valid editions: {', '.join(EDITIONS)}.")
    module = importlib.import_module(f"dicomanonymizer.dicom_anonymization_databases.dicomfields_{edition}")
    table = ConfidentialityTable(edition=edition)
    for category, action in CATEGORY_ACTIONS.items():
        for entry in getattr(module, category):
            if len(entry) == 2:
                tag = (entry[0] << 16) | entry[1]
                if tag in table.exact and table.exact[tag] != action:
                    raise RuntimeError(
                        f"table {edition}: tag {tag:08X} listed as {table.exact[tag]} and {action}"
                    )
                table.exact[tag] = action
            elif len(entry) == 4:
                table.masks.append(MaskRule(entry[0], entry[1], entry[2], entry[3], action))
            else:  # a format change in dicom-anonymizer must fail loudly, not de-identify less
                raise RuntimeError(f"table {edition}: cannot read entry {entry!r} in {category}")
    if len(table) != len(module.ALL_TAGS):
        raise RuntimeError(
            f"table {edition}: loaded {len(table)} rows, the package lists {len(module.ALL_TAGS)}"
        )
    return table
