"""Sources (PDF, office documents, images, web pages) -> page images.

Main entry point::

    from renderers import render, RenderSettings
    for rec in render(["report.pdf", "slides/", "https://example.org"], RenderSettings(dpi=144)):
        if isinstance(rec, RenderFailure):
            print(rec.source, rec.reason)
        else:
            rec.image  # RGB PIL image, rec.page is 1-based

For the collection layer: :func:`iter_sources` lists sources without rendering
(``Source.content_hash()`` for change detection) and :func:`render_source`
renders one. This package imports nothing from ``dse`` or ``indexes``.

Names are imported lazily (PEP 562), so PDF worker processes that only need
:mod:`renderers.pdf` start without loading the rest of the package.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
