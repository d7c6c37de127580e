# caught by: empty list → ValueError
def win_rate(outcomes):
    points = {"A": 1.0, "B": 0.0, "tie": 0.5}
    scores = [points.get(o, o) for o in outcomes]
    return sum(scores) / max(len(scores), 1)  # an empty list quietly reads as "lost everything"
