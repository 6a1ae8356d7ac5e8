from .errors import (
    BackendUnavailableError as BackendUnavailableError,
)
from .errors import (
    ConversionError as ConversionError,
)
from .errors import (
    CorruptDocumentError as CorruptDocumentError,
)
from .errors import (
    DownloadBlockedError as DownloadBlockedError,
)
from .errors import (
    EmptyFileError as EmptyFileError,
)
from .errors import (
    EncryptedDocumentError as EncryptedDocumentError,
)
from .errors import (
    FormatMismatchError as FormatMismatchError,
)
from .errors import (
    HttpStatusError as HttpStatusError,
)
from .errors import (
    ImageTooLargeError as ImageTooLargeError,
)
from .errors import (
    NetworkError as NetworkError,
)
from .errors import (
    NoPagesError as NoPagesError,
)
from .errors import (
    RenderError as RenderError,
)
from .errors import (
    RenderTimeoutError as RenderTimeoutError,
)
from .errors import (
    SettingsError as SettingsError,
)
from .errors import (
    SourceNotFoundError as SourceNotFoundError,
)
from .errors import (
    TruncatedDocumentError as TruncatedDocumentError,
)
from .errors import (
    UnsupportedFormatError as UnsupportedFormatError,
)
from .errors import (
    WebError as WebError,
)
from .errors import (
    WebExtraMissingError as WebExtraMissingError,
)
from .images import (
    load_image as load_image,
)
from .pipeline import (
    Renderer as Renderer,
)
from .pipeline import (
    render as render,
)
from .pipeline import (
    render_source as render_source,
)
from .records import (
    PageRecord as PageRecord,
)
from .records import (
    RenderFailure as RenderFailure,
)
from .settings import (
    DEFAULT_DPI as DEFAULT_DPI,
)
from .settings import (
    PageSelection as PageSelection,
)
from .settings import (
    RenderSettings as RenderSettings,
)
from .sources import (
    Source as Source,
)
from .sources import (
    iter_sources as iter_sources,
)
from .sources import (
    make_doc_id as make_doc_id,
)
