"""Model cards: ``write_card`` writes every card train makes (an export's, an int8 copy's, a
photo correction's); each maker gives only its ``Card``, what differs.

What a person wrote about a model (how it compares, what was tried) is Markdown in
``models/notes/NAME.md``, placed before the card's rebuild commands, so regenerating a card
keeps it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from train.modelfile import SHIPPED

# Hand-written Markdown beside the cards (so in the wheel too: keep it small and plain).
# models/notes/NAME.md is what a reader of NAME's card should know beyond the measured figures.
NOTES = SHIPPED / "notes"


@dataclass(frozen=True)
class Card:
    """What differs between cards: the title after the model's name, the opening paragraph
    after its file name and sha256, the sections, and the commands that rebuild the model."""

    title: str
    opening: str
    sections: tuple[list[str], ...]
    rebuild: str


def notes(name: str) -> str | None:
    """The hand-written notes of the model called ``name`` (None if it has none)."""
    path = NOTES / f"{name}.md"
    return path.read_text().strip("\n") if path.is_file() else None


def write_card(model: str | Path, card: Card) -> Path:
    """Write ``<model>.md``: a header naming the file and its sha256, ``card``'s sections, the
    model's notes (``notes``) and a rebuild block; return the card's path."""
    model = Path(model)
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    lines = [f"# {model.stem}: {card.title}", "",
             f"`{model.name}` (sha256 `{sha}`){card.opening}", ""]
    for section in card.sections:
        lines += section + [""]
    if (text := notes(model.stem)) is not None:
        lines += [text, ""]
    lines += ["## Rebuild", "", "```sh", card.rebuild, "```", ""]
    path = model.with_suffix(".md")
    path.write_text("\n".join(lines))
    return path
