"""Refuse XML that could make a parser expand, fetch or read anything.

Feeds are untrusted documents. Before feedparser sees one, ``check_xml`` parses it with defusedxml,
which raises on any entity declaration (the billion-laughs kind of bomb, and external entities that
point at a file or a URL) and on any external reference; and the document type declaration, which is
the only place such things can hide, is cut out of what feedparser gets. No entity is ever expanded,
no DTD is loaded, and no connection or file read starts from a document.
"""

from __future__ import annotations

import re

from processing.errors import CorruptInput, PermanentError


class UnsafeDocument(PermanentError):
    """The document declares entities or external references: refused, never parsed further."""


_DOCTYPE = re.compile(rb"<!DOCTYPE(?:[^\[>]*\[.*?\]\s*>|[^>]*>)", re.IGNORECASE | re.DOTALL)
_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)
_HTML = re.compile(
    rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*(?:<!doctype\s+html|<html[\s>])", re.IGNORECASE | re.DOTALL
)


def looks_like_html(body: bytes) -> bool:
    """An HTML page (an error page, a login wall, a parked domain) where a feed was expected."""
    return bool(_HTML.match(body[:4096]))


def check_xml(body: bytes) -> bool:
    """Raise ``UnsafeDocument`` for entity declarations or external references; True when well-formed.

    A document that is not well-formed is not refused here (feeds in the wild often are not, and
    feedparser reads them leniently), but the entity rule still holds for it: any ``<!ENTITY`` refuses it.
    """
    import xml.etree.ElementTree as ElementTree

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    if _ENTITY.search(body):
        raise UnsafeDocument("the document declares XML entities; refused (no entity is ever expanded)")
    try:
        fromstring(body, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as error:
        raise UnsafeDocument(f"the document was refused: {error}") from None
    except ElementTree.ParseError:
        return False
    return True


def without_doctype(body: bytes) -> bytes:
    """The document with its type declaration cut out, so no later parser can act on one."""
    return _DOCTYPE.sub(b"", body, count=1)


def require_xml(body: bytes, what: str) -> bool:
    """``check_xml`` after refusing an empty body or HTML; True when well-formed."""
    if not body.strip():
        raise CorruptInput(f"{what} is empty")
    if looks_like_html(body):
        raise CorruptInput(f"{what} is an HTML page, not a feed")
    return check_xml(body)
