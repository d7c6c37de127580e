import numpy as np


def win_rate(outcomes):
    if len(outcomes) == 0:
        raise ValueError("empty")
    values = np.array([{"A": 1.0, "B": 0.0, "tie": 0.5}[o] if isinstance(o, str) else float(o) for o in outcomes])
    return float(values.mean())
