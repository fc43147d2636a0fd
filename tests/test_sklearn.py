"""The scikit-learn estimators: scikit-learn's own estimator checks, and use in its tools.

The checks run with tiny settings (one hidden layer of 16, 4 epochs) so the whole suite of
checks takes a few seconds; no check is marked as expected to fail.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from layerwise.errors import DataError
from layerwise.sklearn import LayerwiseClassifier, LayerwiseRegressor

QUICK = {"hidden": (16,), "epochs": 4, "lr": 0.05, "batch_size": 64}


@parametrize_with_checks([LayerwiseClassifier(**QUICK), LayerwiseRegressor(**QUICK)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def _iris():
    x, y = load_iris(return_X_y=True)
    return train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)


def test_classifier_learns_iris_in_a_pipeline_with_string_labels():
    x_train, x_test, y_train, y_test = _iris()
    names = np.array(["setosa", "versicolor", "virginica"])
    model = make_pipeline(StandardScaler(), LayerwiseClassifier(hidden=(16,), epochs=40, lr=0.02))
    model.fit(x_train, names[y_train])
    assert list(model.classes_) == list(names)
    assert model.score(x_test, names[y_test]) >= 0.9
    probabilities = model.predict_proba(x_test)
    assert probabilities.shape == (len(x_test), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    assert (names[probabilities.argmax(axis=1)] == model.predict(x_test)).all()


def test_grid_search_picks_the_better_learning_rate_and_refits():
    x_train, x_test, y_train, y_test = _iris()
    search = GridSearchCV(
        make_pipeline(StandardScaler(), LayerwiseClassifier(hidden=(16,), epochs=15)),
        {"layerwiseclassifier__lr": [1e-6, 0.03]},
        cv=3,
    )
    search.fit(x_train, y_train)
    assert search.best_params_ == {"layerwiseclassifier__lr": 0.03}
    scores = search.cv_results_["mean_test_score"]
    assert scores[1] > scores[0] + 0.3  # 1e-6 barely moves the weights: near chance
    assert search.score(x_test, y_test) >= 0.85


def test_regressor_beats_the_mean_on_diabetes_in_target_units():
    x, y = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    model = make_pipeline(
        StandardScaler(), LayerwiseRegressor(hidden=(32,), epochs=20, lr=0.003, weight_decay=0.01)
    )
    model.fit(x_train, y_train)
    assert model.score(x_test, y_test) > 0.25  # 0.32 measured; the mean scores 0 (a hard split)
    predicted = model.predict(x_test)
    assert 50 < predicted.mean() < 250  # scaled back to the target's units (mean ~150)


def test_same_seed_same_model_and_the_callers_random_state_is_kept():
    x_train, x_test, y_train, _ = _iris()
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    first = LayerwiseClassifier(hidden=(8,), epochs=3, seed=7).fit(x_train, y_train)
    assert np.random.rand() == expected_next  # fit restored the global NumPy state
    second = LayerwiseClassifier(hidden=(8,), epochs=3, seed=7).fit(x_train, y_train)
    other = LayerwiseClassifier(hidden=(8,), epochs=3, seed=8).fit(x_train, y_train)
    np.testing.assert_array_equal(first.predict_proba(x_test), second.predict_proba(x_test))
    assert not np.allclose(first.predict_proba(x_test), other.predict_proba(x_test))
    assert len(first.loss_curve_) == 3


def test_pickled_estimator_predicts_the_same():
    x_train, x_test, y_train, _ = _iris()
    model = LayerwiseClassifier(hidden=(8,), epochs=3).fit(x_train, y_train)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(model.predict_proba(x_test), again.predict_proba(x_test))


def test_one_class_is_refused_as_a_value_error_and_a_data_error():
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="1 class") as caught:
        LayerwiseClassifier(epochs=1).fit(x, np.zeros(10))
    assert isinstance(caught.value, DataError)
    assert caught.value.hint


def test_early_stopping_holds_out_rows_stops_and_keeps_a_good_model():
    x_train, x_test, y_train, y_test = _iris()
    model = make_pipeline(
        StandardScaler(),
        LayerwiseClassifier(hidden=(16,), epochs=300, lr=0.05, early_stopping=True, patience=3),
    ).fit(x_train, y_train)
    network = model[-1]
    assert len(network.loss_curve_) < 300  # stopped on the held-out loss
    assert len(network.validation_loss_curve_) == len(network.loss_curve_)
    assert model.score(x_test, y_test) >= 0.85
    with pytest.raises(ValueError, match=r"validation_fraction is 1\.5"):
        LayerwiseClassifier(early_stopping=True, validation_fraction=1.5).fit(x_train, y_train)
