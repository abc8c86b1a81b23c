"""The model protocol: built-in and example models pass mpitrain.testing's checks, users'
classes train from the CLI and Python, their errors are one line, saved models re-create
them, and the example models give the same model for any number of ranks."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from cli_runner import ROOT, run_mpi, run_train
from mpi4py import MPI

import mpitrain
from mpitrain.models import MLP, Linear, Logistic, Model, ModelError, Softmax, load_model
from mpitrain.models.registry import make_model, parse_options
from mpitrain.testing import check_gradient, check_model

sys.path.insert(0, str(ROOT / "examples" / "models"))
from conv1d import Conv1D, make_signals
from fm import FactorizationMachine, make_ctr

pytestmark = pytest.mark.timeout(300)
BAD = str(ROOT / "tests" / "user_models" / "bad_models.py")
RNG = np.random.default_rng(3)


# -- mpitrain.testing on every model -------------------------------------------------------

@pytest.mark.parametrize("model,n_classes", [
    (MLP(hidden=(6, 5)), 3), (Softmax(), 4), (Logistic(), 2), (Linear(), 2),
    (FactorizationMachine(rank=3), 2), (Conv1D(filters=3, width=3), 3)])
def test_models_keep_the_protocol(model, n_classes):
    check_model(model, n_features=7, n_classes=n_classes)
    X = RNG.normal(size=(12, 7))
    X[X < -0.5] = 0.0  # some zeros: the factorization machine skips them
    y = RNG.normal(size=12) if model.task == "regression" else RNG.integers(0, n_classes, 12)
    assert check_gradient(model, X, y, n_classes=n_classes) <= 1.0


def test_check_gradient_and_check_model_catch_broken_models():
    sys.path.insert(0, str(ROOT / "tests" / "user_models"))
    import bad_models

    with pytest.raises(AssertionError, match="does not compile"):
        check_model(bad_models.NoCompile())
    with pytest.raises(AssertionError, match="wrote past the end of its gradient"):
        check_model(bad_models.TooLong())
    with pytest.raises(AssertionError, match="non-finite loss"):
        check_model(bad_models.NanLoss())
    # a gradient off by a factor: finite differences see it
    model = FactorizationMachine(rank=2, init_scale=0.5)
    X, y = RNG.normal(size=(6, 4)), RNG.integers(0, 2, 6)
    good = check_gradient(model, X, y)
    assert good <= 1.0
    with pytest.raises(AssertionError, match="finite differences give"):
        check_gradient(model, X, y, params=np.full(1 + 4 + 8, 0.3), rtol=1e-12, atol=1e-14,
                       eps=1e-2)


# -- names, options, saved models ----------------------------------------------------------

def test_model_options_parse_as_json_or_toml():
    assert parse_options('{"rank": 8, "init_scale": 0.1}') == {"rank": 8, "init_scale": 0.1}
    assert parse_options("{rank = 8}") == {"rank": 8}
    assert parse_options("rank = 8") == {"rank": 8}
    assert parse_options(None) == {}
    with pytest.raises(ModelError, match="--model-options must be a JSON object"):
        parse_options("[1, 2]")


@pytest.mark.parametrize("name,options,message", [
    ("nosuchpackage.models:FM", {}, "--model nosuchpackage.models:FM: cannot import "
     "'nosuchpackage.models' (ModuleNotFoundError: No module named 'nosuchpackage')"),
    (f"{BAD}:Nope", {}, "has no 'Nope'"),
    (f"{BAD}:NotAModel", {}, "NotAModel is not a subclass of mpitrain.models.Model"),
    ("/no/such/file.py:M", {}, "--model /no/such/file.py: file does not exist"),
    ("mlp", {"width": 3}, "--model mlp: unknown option 'width' in --model-options "
     "(its options: hidden)"),
    ("cnn", {}, "--model must be one of linear, logistic, softmax, mlp or a class "
     "'package.module:Class' (got 'cnn')"),
])
def test_bad_model_names_say_why(name, options, message):
    with pytest.raises(ModelError) as info:
        make_model(name, options=options)
    assert message in str(info.value)


def test_saved_user_model_predicts_after_reloading(tmp_path):
    make_signals(str(tmp_path / "signals.npz"), rows=300)
    result = mpitrain.train(model=Conv1D(filters=4, width=3), data=str(tmp_path / "signals.npz"),
                            epochs=3, dtype="float64", out=str(tmp_path / "run"), quiet=True,
                            comm=MPI.COMM_SELF)
    saved = load_model(tmp_path / "run" / "model.npz")
    assert saved.model == "conv1d:Conv1D" and saved.options == {"filters": 4, "width": 3}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["model"]["tensors"] == {"Wc": [4, 3], "bc": [4], "Wd": [4, 3], "bd": [3]}
    X = np.load(tmp_path / "signals.npz")["X"]
    proba = mpitrain.predict_proba(saved, X[:20])
    assert proba.shape == (20, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    classes = mpitrain.predict(saved, X[:20])
    np.testing.assert_array_equal(classes, proba.argmax(axis=1))
    assert mpitrain.predict(saved, X[0]) == classes[0]  # one 1-D row
    with pytest.raises(ModelError, match="X has 5 features per row but the model was trained "
                       "on 48"):
        mpitrain.predict(saved, X[:3, :5])
    assert result.params["Wc"].shape == (4, 3)


def test_a_saved_model_whose_class_is_gone_says_so(tmp_path):
    make_ctr(str(tmp_path / "ctr.npz"), rows=200)
    mpitrain.train(model=FactorizationMachine(rank=2), data=str(tmp_path / "ctr.npz"),
                   standardize=False, epochs=1, out=str(tmp_path / "run"), quiet=True,
                   comm=MPI.COMM_SELF)
    path = tmp_path / "run" / "model.npz"
    arrays = dict(np.load(path))
    arrays["meta_model"] = np.array("gone_module:FactorizationMachine")
    np.savez(path, **arrays)
    with pytest.raises(ModelError, match=r"this model\.npz was trained with "
                       "'gone_module:FactorizationMachine', which cannot be re-created here"):
        mpitrain.predict(path, np.zeros((1, 100)))


def test_builtin_predictions_are_classes_probabilities_or_values(tmp_path):
    for model, check in (("logistic", lambda out: set(np.unique(out)) <= {0, 1}),
                         ("linear", lambda out: out.dtype == np.float32)):
        mpitrain.train(data="synthetic", samples=200, model=model, epochs=1, quiet=True,
                       out=str(tmp_path / model), comm=MPI.COMM_SELF)
        out = mpitrain.predict(tmp_path / model / "model.npz", RNG.normal(size=(9, 20)))
        assert out.shape == (9,) and check(out)
    proba = mpitrain.predict_proba(tmp_path / "logistic" / "model.npz", RNG.normal(size=(4, 20)))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ModelError, match="predict_proba needs a classifier"):
        mpitrain.predict_proba(tmp_path / "linear" / "model.npz", RNG.normal(size=(4, 20)))


# -- the CLI, the way users meet it ---------------------------------------------------------

@pytest.mark.parametrize("cls,fragment", [
    ("NoCompile", "NoCompile: gradient_kernel does not compile"),
    ("TooLong", "TooLong: gradient_kernel wrote past the end of its gradient"),
    ("NanLoss", "NanLoss: gradient_kernel returned a non-finite loss (nan)"),
    ("Missing", "has no 'Missing'"),
    ("ShapesRaise", "ShapesRaise: shapes() raised AttributeError: 'ShapesRaise' object has "
     "no attribute 'width'"),
])
def test_broken_user_models_stop_every_rank_with_one_line(tmp_path, cls, fragment):
    done = run_train(["--data", "synthetic", "--samples", "100", "--model", f"{BAD}:{cls}",
                      "--epochs", "1"], ranks=2)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("mpitrain: error: "), done.stderr
    assert fragment in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_cli_trains_a_user_model_with_options(tmp_path):
    make_ctr(str(tmp_path / "ctr.npz"), rows=400)
    out = tmp_path / "run"
    done = run_train(["--model", str(ROOT / "examples/models/fm.py") + ":FactorizationMachine",
                      "--model-options", '{"rank": 4}', "--data", str(tmp_path / "ctr.npz"),
                      "--no-standardize", "--epochs", "2", "--out", str(out)], ranks=2)
    assert done.returncode == 0, done.stderr
    saved = load_model(out / "model.npz")
    assert saved.options == {"rank": 4, "init_scale": 0.01}
    assert saved.params["V"].shape == (100, 4)
    # config.toml replays the run with the same options (on as many ranks: other rank
    # counts agree within rounding, test_example_models_give_the_same_model_for_any_rank_count)
    again = run_train(["--config", str(out / "config.toml"), "--out", str(tmp_path / "again")],
                      ranks=2)
    assert again.returncode == 0, again.stderr
    np.testing.assert_array_equal(load_model(tmp_path / "again" / "model.npz").params["V"],
                                  saved.params["V"])


@pytest.mark.parametrize("model", ["fm", "conv1d"])
def test_example_models_give_the_same_model_for_any_rank_count(tmp_path, model):
    flats = []
    for ranks in (1, 2, 3):
        out = tmp_path / f"{model}-{ranks}"
        done = run_mpi([str(ROOT / "examples/models/train_models.py"), "--model", model,
                        "--out", str(out), "--epochs", "2", "--rows", "600",
                        "--dtype", "float64"], ranks=ranks, timeout=240)
        assert done.returncode == 0, done.stderr
        assert f"{model}: test accuracy" in done.stdout
        saved = load_model(out / "model.npz")
        flats.append(np.concatenate([a.ravel() for a in saved.params.values()]))
    for other in flats[1:]:
        np.testing.assert_allclose(other, flats[0], rtol=1e-10, atol=1e-12)


def test_a_model_object_is_a_model():
    assert isinstance(FactorizationMachine(), Model)
    assert FactorizationMachine(rank=3).get_params() == {"rank": 3, "init_scale": 0.01}
    assert repr(Conv1D()) == "Conv1D(filters=8, width=5)"


def test_a_user_model_trains_federated_and_resumes(tmp_path):
    """Federated clients and checkpoints work with a user's model unchanged."""
    make_signals(str(tmp_path / "signals.npz"), rows=300)
    common = dict(model=Conv1D(filters=3, width=3), data=str(tmp_path / "signals.npz"),
                  mode="fedavg", clients=6, rounds=4, local_epochs=2, local_batch=10,
                  local_lr=0.5,
                  dtype="float64", quiet=True, comm=MPI.COMM_SELF)
    whole = mpitrain.train(**common)
    assert whole.history[-1]["test_loss"] < whole.history[0]["test_loss"]
    mpitrain.train(**{**common, "rounds": 2}, out=str(tmp_path / "half"))
    resumed = mpitrain.train(**common, resume=str(tmp_path / "half"),
                             out=str(tmp_path / "rest"))
    np.testing.assert_array_equal(resumed.flat, whole.flat)
