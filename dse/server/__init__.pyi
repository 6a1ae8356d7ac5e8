from .app import create_app as create_app
from .batching import QueryBatcher as QueryBatcher
from .limits import Limits as Limits
