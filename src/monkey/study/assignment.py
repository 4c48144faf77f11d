"""Who sees what, in which order: a seeded, position-balanced assignment of questions to participants.

Every participant answers the same questions (so raters can be compared: Krippendorff's alpha), in
their own seeded order, with the attention checks at seeded places. Which method's image sits in
which position comes from one seeded random Latin square per dataset (rows: orders of the methods,
each method once per row and once per column). A dataset's screens, question by question, take its
rows in turn, the question's participants in a seeded random order. So over a dataset every method
appears at every position equally often (exactly when questions x participants is a multiple of k,
the number of methods, else to within one), a question's participants see different orders, and no
participant is tied to one order: in a fixed participant order, k dividing the number of
participants (30 people, 6 methods) would show each person the same order on every question and turn
their position bias into a method preference.

An attention check is an item outside the study questions whose options hold the methods' images
with one replaced by a copy of the subject image (`SOURCE`); the instructions ask participants to
pick such a copy whenever they see one. Its position cycles over the positions too.
"""

from dataclasses import dataclass

import numpy as np

from monkey.study.questions import Candidate

SOURCE = "source-duplicate"  # the option label of an attention check's copy of the subject image
STUDY, CHECK = "study", "attention"


@dataclass(frozen=True)
class Screen:
    participant: str
    screen: int  # 1-based place on the participant's page
    question: str  # study question id (`<dataset>-qNN`) or check id (`check-NN`)
    kind: str  # STUDY or CHECK
    candidate: Candidate
    options: tuple[str, ...]  # method label (or SOURCE) per position, left to right


def participant_ids(count: int) -> list[str]:
    width = max(2, len(str(count)))
    return [f"p{index:0{width}d}" for index in range(1, count + 1)]


def latin_square(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random Latin square: the cyclic one with rows, columns and symbols permuted. [size, size]"""
    cyclic = (np.arange(size)[:, None] + np.arange(size)[None, :]) % size
    rows, columns, symbols = rng.permutation(size), rng.permutation(size), rng.permutation(size)
    return symbols[cyclic[rows][:, columns]]


def question_ids(chosen: dict[str, list[Candidate]]) -> dict[str, Candidate]:
    return {f"{dataset}-q{index + 1:02d}": c for dataset, items in chosen.items() for index, c in enumerate(items)}


def assign(
    methods: list[str],
    chosen: dict[str, list[Candidate]],
    checks: list[Candidate],
    participants: int,
    seed: int,
) -> list[Screen]:
    """All screens of all participants, participant by participant in page order."""
    k = len(methods)
    squares = {
        dataset: latin_square(k, np.random.default_rng([seed, 0, index])) for index, dataset in enumerate(chosen)
    }
    check_square = latin_square(k, np.random.default_rng([seed, 1]))
    people = participant_ids(participants)
    options: dict[tuple[str, str], tuple[str, ...]] = {}
    for index, (dataset, items) in enumerate(chosen.items()):
        rng = np.random.default_rng([seed, 4, index])
        for q in range(len(items)):
            turn = rng.permutation(participants)  # participant p is the question's turn[p]-th screen
            for p, person in enumerate(people):
                row = squares[dataset][(q * participants + turn[p]) % k]
                options[(person, f"{dataset}-q{q + 1:02d}")] = tuple(methods[m] for m in row)
    for j in range(len(checks)):
        for p, person in enumerate(people):
            row = [methods[m] for m in check_square[(j * participants + p) % k]]
            row[(p * len(checks) + j) % k] = SOURCE
            options[(person, f"check-{j + 1:02d}")] = tuple(row)

    study = question_ids(chosen)
    ids = list(study)
    screens = []
    for p, person in enumerate(people):
        rng = np.random.default_rng([seed, 2, p])
        order = [ids[i] for i in rng.permutation(len(ids))]
        for j in range(len(checks)):  # never first: a participant meets the task before a check
            order.insert(int(rng.integers(1, len(order) + 1)), f"check-{j + 1:02d}")
        for place, question in enumerate(order, start=1):
            is_check = question.startswith("check-")
            candidate = checks[int(question[6:]) - 1] if is_check else study[question]
            screens.append(
                Screen(person, place, question, CHECK if is_check else STUDY, candidate, options[(person, question)])
            )
    return screens
