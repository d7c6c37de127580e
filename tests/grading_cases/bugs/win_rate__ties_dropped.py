# caught by: ['A', 'tie', 'tie', 'B', 'A'] → 0.6
def win_rate(outcomes):
    decided = [o for o in outcomes if o not in ("tie", 0.5)]  # ties left out of the denominator
    if not decided:
        raise ValueError("no decided comparisons")
    return sum(1.0 for o in decided if o in ("A", 1)) / len(decided)
