from .collection import (
    Collection as Collection,
)
from .collection import (
    CollectionError as CollectionError,
)
from .collection import (
    Hit as Hit,
)
from .encoders import (
    Encoder as Encoder,
)
from .encoders import (
    EncoderError as EncoderError,
)

__version__: str
