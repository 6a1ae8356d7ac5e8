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
from .single import (
    INDEX_TYPES as INDEX_TYPES,
)
from .single import (
    SingleVectorIndex as SingleVectorIndex,
)

IndexError_ = VectorIndexError
