"""dse: OCR-free document retrieval over page screenshots.

``from dse import Collection, Encoder`` — imported lazily so ``import dse`` stays cheap.
"""

import lazy_loader as _lazy

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
__all__ += ["__version__"]
