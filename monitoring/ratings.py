"""How the models rank by the A/B votes of the feedback: wins, losses and a Bradley-Terry strength (on Elo's
scale too) of each model. No file is read here: monitoring/dashboard_data.py reads and shapes the rest of
what the dashboard shows, and uses version_of, model_of and rate from here (it imports this module, never
the reverse).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass

from feedback.records import Feedback

# Bradley-Terry: each model also plays a virtual opponent of strength 1, winning PRIOR_GAMES and losing
# PRIOR_GAMES: a model that was never beaten keeps a finite strength, and one with few votes stays near 1.
PRIOR_GAMES = 1.0
ELO_CENTRE, ELO_SCALE = 1000.0, 400.0  # Elo's scale: 400 points = 10 to 1 odds of winning
UNKNOWN_MODEL = "(model not recorded)"


def version_of(model: str) -> str | None:
    """The version id in a model's display name ("SmolLM2-135M-Instruct (bundled), version v20261127-101500"),
    None when it names no version."""
    return model.rsplit(", version ", 1)[1] if ", version " in model else None


def model_of(answer: dict) -> str:
    return str(answer.get("model") or UNKNOWN_MODEL)


@dataclass
class ModelRating:
    model: str
    comparisons: int  # votes between this model and another one
    wins: int
    losses: int
    both_bad: int
    strength: float  # Bradley-Terry, normalised: the strengths of all rated models sum to 1
    elo: float  # the same on Elo's scale, ELO_CENTRE at the geometric mean of the strengths

    @property
    def version(self) -> str | None:
        return version_of(self.model)

    @property
    def win_rate(self) -> float | None:
        """Wins among the votes that chose one of the two answers."""
        return rate(self.wins, self.wins + self.losses)

    def row(self) -> dict:
        return {"model": self.model, "version": self.version, "comparisons": self.comparisons, "wins": self.wins,
                "losses": self.losses, "both bad": self.both_bad, "win rate": self.win_rate,
                "strength": self.strength, "elo": self.elo}


@dataclass
class PairwiseRatings:
    ratings: list[ModelRating]  # the strongest first
    same_model_votes: int  # two samples of one model: they say nothing about the models, so are left out


def pairwise_ratings(entries: list[Feedback]) -> PairwiseRatings:
    """Wins, losses and a Bradley-Terry rating of each model from the A/B votes ("first"/"second" means that
    answer won; "both_bad" counts as a comparison without a winner)."""
    wins: Counter = Counter()  # (winner, loser) -> votes
    both_bad: Counter = Counter()
    models: set[str] = set()
    same_model = 0
    for entry in entries:
        if entry.choice not in ("first", "second", "both_bad"):
            continue
        first, second = model_of(entry.answers[0]), model_of(entry.answers[1])
        if first == second:
            same_model += 1
            continue
        models |= {first, second}
        if entry.choice == "both_bad":
            both_bad[first] += 1
            both_bad[second] += 1
        else:
            wins[(first, second) if entry.choice == "first" else (second, first)] += 1
    strengths = bradley_terry(sorted(models), wins)
    total = sum(strengths.values())
    centre = geometric_mean(list(strengths.values())) if strengths else 1.0
    ratings = []
    for model in models:
        won = sum(count for (winner, _), count in wins.items() if winner == model)
        lost = sum(count for (_, loser), count in wins.items() if loser == model)
        ratings.append(ModelRating(model, won + lost + both_bad[model], won, lost, both_bad[model],
                                   strengths[model] / total,
                                   ELO_CENTRE + ELO_SCALE * math.log10(strengths[model] / centre)))
    ratings.sort(key=lambda rating: (-rating.strength, rating.model))
    return PairwiseRatings(ratings, same_model)


def bradley_terry(players: list[str], wins: Counter, prior: float = PRIOR_GAMES, tolerance: float = 1e-10,
                  max_iterations: int = 10_000) -> dict[str, float]:
    """Bradley-Terry strengths p (P(i beats j) = p_i / (p_i + p_j)) by the MM (Zermelo) iteration of Hunter
    (2004): p_i <- W_i / sum_j n_ij / (p_i + p_j). Each player also has `prior` wins and `prior` losses
    against a fixed opponent of strength 1, which keeps every strength finite and positive and fixes the
    scale (the likelihood alone is unchanged by multiplying all strengths)."""
    strength = {player: 1.0 for player in players}
    games: Counter = Counter()  # unordered pair -> decisive votes
    won: Counter = Counter()
    for (winner, loser), count in wins.items():
        games[frozenset((winner, loser))] += count
        won[winner] += count
    opponents = defaultdict(list)
    for pair, count in games.items():
        first, second = tuple(pair)
        opponents[first].append((second, count))
        opponents[second].append((first, count))
    for _ in range(max_iterations):
        updated = {}
        for player in players:
            p = strength[player]
            denominator = sum(count / (p + strength[other]) for other, count in opponents[player])
            denominator += 2 * prior / (p + 1.0)
            updated[player] = (won[player] + prior) / denominator
        change = max((abs(math.log(updated[player] / strength[player])) for player in players), default=0.0)
        strength = updated
        if change < tolerance:
            break
    return strength


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(value) for value in values) / len(values))


def rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None
