"""NHSA platform messages in, as institutions' systems send them (issue #13; design §3 "Platform
messages as they are").

* ``monitor.nhsa.codec.Codec`` — envelopes, wrappers, trace-code splitting, scalars → records and join
  items (``decode``);
* ``monitor.nhsa.join`` — ``apply``/``advance``: the 2204 ↔ 2207 join by ``mdtrt_id`` and revocations by
  ``setl_id``, with its state inside the engine's snapshot.

The shells call ``decoder(pack)`` once and ``apply``/``advance`` where they called ``Engine.process`` /
``Engine.advance``.
"""

from __future__ import annotations

from typing import Any

from monitor.nhsa.codec import Codec, Item
from monitor.nhsa.join import advance, apply

_CODECS: dict[int, Codec] = {}


def decoder(pack: Any) -> Codec:
    """The codec of a policy pack (its ``nhsa_aliases``), built once per pack object."""
    codec = _CODECS.get(id(pack))
    if codec is None:
        if len(_CODECS) > 64:
            _CODECS.clear()
        codec = _CODECS[id(pack)] = Codec.for_pack(pack)
    return codec


__all__ = ["Codec", "Item", "advance", "apply", "decoder"]


#: The replay file / pseudo-stream of ``medins.uploads``: every platform message, routed by ``infno``.
UPLOADS = "uploads"


def stream_decoder(engine: Any) -> Any:
    """``(stream, raw) → items`` for a shell: the engine's pack's codec, counting into its quality
    figures; the stream ``uploads`` (``medins.uploads``) is routed by ``infno`` alone."""
    pack = getattr(engine, "pack", None)  # an engine stand-in in shell tests has none: built-in aliases
    codec = decoder(pack) if pack is not None else Codec()
    quality = engine.stats.quality

    def decode(stream: str, raw: bytes) -> list[Item]:
        return codec.decode(None if stream == UPLOADS else stream, raw, quality)

    return decode
