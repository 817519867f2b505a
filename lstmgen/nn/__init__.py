from .lstm import LSTM, lstm_cell, BACKENDS
__all__ = ["LSTM", "lstm_cell", "BACKENDS"]
