from .lstm import BACKENDS, LSTM, lstm_cell

__all__ = ["LSTM", "lstm_cell", "BACKENDS"]
