from collections import Counter


def win_rate(outcomes):
    counts = Counter("A" if o in ("A", 1) else "B" if o in ("B", 0) else "tie" for o in outcomes)
    n = sum(counts.values())
    if n == 0:
        raise ValueError("win_rate of no comparisons")
    return (counts["A"] + 0.5 * counts["tie"]) / n
