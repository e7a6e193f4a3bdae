"""Entity tag schemes of token classification: BIO (IOB2), IOB1 and IOBES, checked and recognised.

Scoring reads every scheme the way conlleval does (`metrics.conll_entities`); what is checked here is that
the tags of a file follow the scheme its config declares, so a file in another scheme is refused with the
line and the way it would be read, not scored under a silent misreading.
"""

from __future__ import annotations

from collections.abc import Sequence

from bert_jax.config import InputError


def split_tag(tag: str, where: str) -> tuple[str, str]:
    """(prefix, type) of a tag: O -> ('O', ''); anything but O and B/I/E/S-TYPE is an InputError."""
    if tag == "O":
        return "O", ""
    prefix, dash, kind = tag.partition("-")
    if not dash or prefix not in ("B", "I", "E", "S") or not kind:
        raise InputError(f"{where}: tag {tag!r} is not O or PREFIX-TYPE (B-PER, I-PER, E-PER, S-PER); entity F1 "
                         "needs BIO, IOB1 or IOBES tags.")
    return prefix, kind


def starts_with_inside(tags: Sequence[str]) -> bool:
    """Does an I- tag ever start an entity (after O, at the start, or after another type): IOB1's reading?"""
    previous = ("O", "")
    for tag in tags:
        prefix, kind = split_tag(tag, "")
        if prefix == "I" and (previous[0] == "O" or previous[1] != kind):
            return True
        previous = (prefix, kind)
    return False


def check_tags(tags, scheme: str, where: str) -> None:
    """InputError naming the first tag that breaks `scheme` ('auto' checks only the tag shapes)."""
    previous = ("O", "")
    for position, tag in enumerate(tags):
        prefix, kind = split_tag(tag, where)
        if scheme in ("BIO", "IOB1") and prefix in ("E", "S"):
            raise InputError(f"{where}: tag {tag!r} (token {position + 1}) is IOBES, but tag_scheme={scheme!r}; set "
                             "--config.data.tag_scheme=IOBES (or auto).")
        if scheme == "BIO" and prefix == "I" and (previous[0] == "O" or previous[1] != kind):
            raise InputError(f"{where}: tag {tag!r} (token {position + 1}) follows {tags[position - 1] if position else 'the sentence start'!r}; "
                             "with tag_scheme='BIO' an entity starts with B-, and I- only continues one. An I- that "
                             "starts an entity is IOB1: set --config.data.tag_scheme=IOB1 (or auto) to read it so, "
                             "or fix the tags.")
        if scheme == "IOBES" and prefix in ("I", "E") and (previous[0] not in ("B", "I") or previous[1] != kind):
            raise InputError(f"{where}: tag {tag!r} (token {position + 1}) does not continue a B-{kind} or I-{kind}; "
                             "with tag_scheme='IOBES' entities are S-X, or B-X I-X... E-X.")
        if scheme == "IOBES" and previous[0] in ("B", "I") and not (prefix in ("I", "E") and kind == previous[1]):
            raise InputError(f"{where}: the entity {previous[0]}-{previous[1]} before token {position + 1} is not "
                             "closed by E-; with tag_scheme='IOBES' entities are S-X, or B-X I-X... E-X.")
        previous = (prefix, kind)
    if scheme == "IOBES" and previous[0] in ("B", "I"):
        raise InputError(f"{where}: the sentence ends inside {previous[0]}-{previous[1]}; with tag_scheme='IOBES' "
                         "an entity ends with E- (or is a single S-).")
