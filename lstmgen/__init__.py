"""lstmgen: LSTM text generation on PyTorch — train on your text, sample, share one folder."""
__version__ = "0.1.0"

from .errors import (  # noqa: E402
           ChecksumError,
           DataNotFoundError,
           LstmgenError,
           ModelFolderError,
           UserInputError,
)
from .folder import bundled_models  # noqa: E402
from .pipelines import TextGenerator, load  # noqa: E402

__all__ = ["__version__", "load", "TextGenerator", "bundled_models", "LstmgenError", "UserInputError",
           "DataNotFoundError", "ChecksumError", "ModelFolderError"]
