from .errors import (
    DuplicateIdError as DuplicateIdError,
)
from .errors import (
    IndexFormatError as IndexFormatError,
)
from .errors import (
    IndexInputError as IndexInputError,
)
from .errors import (
    UnknownIdError as UnknownIdError,
)
from .errors import (
    VectorIndexError as VectorIndexError,
)
from .maxsim import (
    maxsim_scores as maxsim_scores,
)
from .multi import (
    MultiVectorIndex as MultiVectorIndex,
)
from .protocol import (
    VectorIndex as VectorIndex,
)
from .single import (
    INDEX_TYPES as INDEX_TYPES,
)
from .single import (
    SingleVectorIndex as SingleVectorIndex,
)

#: Alias: the base class of every index error.
IndexError_ = VectorIndexError
