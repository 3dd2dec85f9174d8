"""Job callables the launcher submits (see train_cell.py)."""
