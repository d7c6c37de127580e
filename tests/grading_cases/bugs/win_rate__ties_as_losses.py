# caught by: ['A', 'B', 'tie'] → 0.5
def win_rate(outcomes):
    if not outcomes:
        raise ValueError("no comparisons")
    return sum(1.0 for o in outcomes if o in ("A", 1)) / len(outcomes)  # a tie counts as a loss
