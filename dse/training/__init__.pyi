from .data import (
    TrainingData as TrainingData,
)
from .data import (
    TrainingDataError as TrainingDataError,
)
from .data import (
    load_training_data as load_training_data,
)
from .merge import (
    merge_adapter as merge_adapter,
)
from .negatives import (
    mine_negatives as mine_negatives,
)
from .trainer import (
    TrainConfig as TrainConfig,
)
from .trainer import (
    TrainingError as TrainingError,
)
from .trainer import (
    TrainResult as TrainResult,
)
from .trainer import (
    read_log as read_log,
)
from .trainer import (
    train as train,
)
