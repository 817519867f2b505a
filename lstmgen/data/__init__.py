"""Corpora: the registry, the `--data` syntax, token caches and batching."""
from .batching import StreamBatcher, zero_state_windows
from .cache import TokenArray, token_cache
from .registry import REGISTRY, Dataset, cache_dir, find_file, get_dataset
from .sources import Corpus, open_corpus

__all__ = ["StreamBatcher", "zero_state_windows", "TokenArray", "token_cache", "REGISTRY", "Dataset",
           "cache_dir", "find_file", "get_dataset", "Corpus", "open_corpus"]
