"""Retrieval recall (medjax/evaluators/retrieval.py) on hand-counted cases."""
import numpy as np

from medjax.evaluators.retrieval import recall_at


def test_recall_counts_a_right_candidate_within_the_top_k():
  sim = np.array([[0.9, 0.1, 0.5],    # query 0: right = 0, ranked 1st
                  [0.8, 0.2, 0.7],    # query 1: right = 1, ranked 3rd
                  [0.1, 0.6, 0.3]])   # query 2: right = 2, ranked 2nd
  right = np.eye(3, dtype=bool)
  assert recall_at(sim, right, (1, 2, 3)) == {1: 1 / 3, 2: 2 / 3, 3: 1.0}


def test_identical_texts_are_all_right():
  # Two X-rays of one patient share their notes: either copy of the text is a hit.
  sim = np.array([[0.1, 0.9, 0.0], [0.9, 0.1, 0.0], [0.0, 0.2, 0.9]])
  text_of = np.array([0, 0, 1])
  right = text_of[:, None] == text_of[None, :]
  assert recall_at(sim, right, (1,)) == {1: 1.0}
  assert recall_at(sim, np.eye(3, dtype=bool), (1,)) == {1: 1 / 3}
