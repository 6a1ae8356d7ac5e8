from .compare import (
    compare_runs as compare_runs,
)
from .data import (
    CorpusFailure as CorpusFailure,
)
from .data import (
    CorpusItem as CorpusItem,
)
from .data import (
    DatasetFormatError as DatasetFormatError,
)
from .data import (
    EvalDataset as EvalDataset,
)
from .data import (
    Query as Query,
)
from .data import (
    iter_corpus_images as iter_corpus_images,
)
from .data import (
    load_local_dataset as load_local_dataset,
)
from .data import (
    load_qrels as load_qrels,
)
from .data import (
    write_local_dataset as write_local_dataset,
)
from .metrics import (
    DEFAULT_K_VALUES as DEFAULT_K_VALUES,
)
from .metrics import (
    compute_metrics as compute_metrics,
)
from .runner import (
    EvalResult as EvalResult,
)
from .runner import (
    Run as Run,
)
from .runner import (
    evaluate as evaluate,
)
from .runs import (
    read_metrics as read_metrics,
)
from .runs import (
    read_run as read_run,
)
from .runs import (
    write_metrics as write_metrics,
)
from .runs import (
    write_run as write_run,
)
