"""Saved models load without pickle and predict like the trained parameters."""

import inspect
from importlib import import_module

import numpy as np
from mpi4py import MPI

import mpitrain
from mpitrain import load_model, predict, train
from mpitrain.kernels.reference import reference_predict


def test_predict_matches_training_accuracy_and_reference(tmp_path):
    out = tmp_path / "run"
    result = train(comm=MPI.COMM_SELF, data="synthetic", samples=400, features=5, classes=3,
                   model="softmax", epochs=3, out=str(out), quiet=True, test_fraction=0.0)
    saved = load_model(out / "model.npz")
    assert saved.model == "softmax" and (saved.n_features, saved.n_classes) == (5, 3)
    for name, value in result.params.items():
        np.testing.assert_array_equal(saved.params[name], value)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 5)) * 3 + 1
    classes = predict(saved, X)
    assert classes.dtype == np.int64 and classes.shape == (50,)
    standardized = ((X - saved.mean) / saved.std).astype(np.float32)
    expected = reference_predict(result.flat, np.array([5, 3]), 2, standardized)
    np.testing.assert_array_equal(classes, np.asarray(expected).astype(np.int64))
    # the lazy attribute is the function itself (not the module of the same name)
    assert mpitrain.predict is import_module("mpitrain.models.predict").predict
    assert inspect.isfunction(mpitrain.predict)
