"""The explain page: one HTML file where you draw a digit and watch the linear model decide.

Shapes: N training images, M test images, D = S * S pixels (S the image side), C classes.

:func:`write_page` writes one self-contained file (scripts, styles and data inline, no network
request: its Content-Security-Policy forbids them) that holds

- a drawing pad whose strokes are made MNIST-like exactly as ``fastlr predict`` makes an image
  file (``fastlr/images.py``, ported to ``page_assets/page.js``) and then scored by the model in
  the page, with the deskewed input beside it for a deskewing model;
- the contribution maps ``w_c * (x - mean)`` of every pixel against the mean training image
  (so missing ink counts too) for the model's answer and the runner-up (a loaded mistake: its
  true class), and their difference;
- the model's weight images beside those of a comparison model with a small L2 penalty, each
  with its measured test accuracy;
- the confusion matrix on the test set and the misclassified test images, each of which loads
  into the pad when clicked.

The page's source lives in ``page_assets/`` (``page.html``, ``page.css``, ``page.js``) and is
inlined here. The data travels as one JSON object; weights as base64 float32, test images as
base64 bytes 0-255 (the form IDX files hold them in).
"""

import base64
import html
import json
import time
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import write_text
from .errors import DataError
from .explain import confusion_matrix
from .images import BOX, CENTRE, INK_THRESHOLD, SIDE
from .model import SoftmaxRegression
from .preprocess import apply_preprocessing

ASSETS = Path(__file__).with_name("page_assets")

# The comparison model's L2 penalty: the smallest at which the templates read as digits on
# MNIST with the defaults otherwise (the sweep: docs/journal/epyc-zen3.md).
COMPARE_L2 = 3e-3

# Misclassified test images kept per cell of the confusion matrix, the most confident first:
# enough to browse each kind of mistake while keeping an MNIST page well under 1 MB (the
# default model keeps 449 of its 731 mistakes). At most MAX_MISTAKES in all, so that a model of
# many classes gets a small page too.
MISTAKES_PER_CELL = 8

# The most epochs the comparison model trains, whatever the model file's metadata asks: ten
# times the default; a file asking for a million would have the page train for days.
MAX_COMPARE_EPOCHS = 100
# ... and the most classes it shows: its confusion matrix has C * C cells (a model file may
# declare 21,000 classes: 3.5 GB of counts). Quick, Draw! has 345.
MAX_PAGE_CLASSES = 1000
MAX_MISTAKES = 1000


def _float32_base64(array):
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def _model_entry(model, X_test, y_test, description):
    from .plots import robust_limit  # matplotlib loads only when a page is written
    return {"coef": _float32_base64(model.coef_),
            "intercept": [float(b) for b in model.intercept_],
            "limit": robust_limit(model.coef_),
            "test_accuracy": float(model.score(X_test, y_test)),
            "l2": float(model.alpha),
            "description": description}


def _settings(model):
    params = model.get_params()
    epochs = len(model.history_) or params["epochs"]
    return (f"{epochs} epoch{'s' if epochs != 1 else ''} of batch {params['batch_size']}, "
            f"learning rate {params['learning_rate']:g} ({params['lr_schedule']}), "
            f"L2 {params['alpha']:g}")


def train_comparison(model, X_train, y_train, *, l2=COMPARE_L2, backend="auto", n_threads=None,
                     random_state=0):
    """The model's hyperparameters with L2 ``l2``, trained on the training data.

    Parameters
    ----------
    model : SoftmaxRegression, whose hyperparameters (preprocessing included) are copied
    X_train : (N, D) raw pixels, y_train : (N,)
    l2 : float, the comparison's L2 penalty
    backend, n_threads, random_state : how the comparison is trained

    The comparison trains the model's epochs, at most :data:`MAX_COMPARE_EPOCHS`.

    Returns
    -------
    (SoftmaxRegression, seconds)
    """
    params = model.get_params()
    # The epochs come from a model file, which may ask for any number: capped.
    params.update(alpha=l2, backend=backend, n_threads=n_threads, random_state=random_state,
                  verbose=False, epochs=min(params["epochs"], MAX_COMPARE_EPOCHS))
    start = time.perf_counter()
    comparison = SoftmaxRegression(**params).fit(X_train, y_train)
    return comparison, time.perf_counter() - start


def _mistakes(X_test, y_test, classes, proba):
    """The misclassified test images, at most ``MISTAKES_PER_CELL`` per (true, predicted) cell
    and ``MAX_MISTAKES`` in all, the most confident first, ordered by that confidence."""
    true_index = np.searchsorted(classes, y_test)
    predicted = proba.argmax(axis=1)
    wrong = np.flatnonzero(predicted != true_index)
    confidence = proba[wrong, predicted[wrong]]
    wrong = wrong[np.argsort(-confidence, kind="stable")]
    kept, per_cell = [], {}
    for index in wrong:
        cell = (true_index[index], predicted[index])
        if per_cell.get(cell, 0) < MISTAKES_PER_CELL and len(kept) < MAX_MISTAKES:
            per_cell[cell] = per_cell.get(cell, 0) + 1
            kept.append(index)
    kept = np.array(kept, dtype=np.int64)
    pixels = np.rint(np.asarray(X_test[kept], dtype=np.float64) * 255).astype(np.uint8)
    return {"pixels": base64.b64encode(pixels.tobytes()).decode("ascii"),
            "index": kept.tolist(),
            "true": true_index[kept].tolist(),
            "predicted": predicted[kept].tolist(),
            "confidence": proba[kept, predicted[kept]].tolist(),
            "total": int(len(wrong))}


def page_data(model, X_train, y_train, X_test, y_test, *, model_name="model", compare=None,
              compare_name=None, compare_l2=COMPARE_L2, backend="auto", n_threads=None,
              random_state=0):
    """Everything the page shows, as a JSON-ready dict.

    Parameters
    ----------
    model : fitted SoftmaxRegression on square images (D = S * S)
    X_train : (N, D), y_train : (N,)
        Raw pixels in [0, 1]; used only to train the comparison model.
    X_test : (M, D), y_test : (M,)
        Raw pixels in [0, 1] as 0-255 / 255 (what ``load_mnist`` gives); the model applies its
        own preprocessing.
    model_name : str, how the page names the model
    compare : fitted SoftmaxRegression, optional
        The model shown beside; default: one trained here by :func:`train_comparison` with
        L2 ``compare_l2``, on ``backend`` with ``n_threads`` threads and seed ``random_state``.
    compare_name : str, how the page names ``compare`` (its file name)

    Raises
    ------
    DataError
        If the images are not square, or the data does not fit the model.
    """
    n_features = model.n_features_in_
    side = int(round(np.sqrt(n_features)))
    if side * side != n_features:
        raise DataError(f"the page draws square images, but the model takes {n_features} "
                        f"pixels, not a square number")
    for name, X in (("training", X_train), ("test", X_test)):
        if X.shape[1] != n_features:
            raise DataError(f"the {name} images have {X.shape[1]} pixels, the model takes "
                            f"{n_features}")
    classes = model.classes_
    if len(classes) > MAX_PAGE_CLASSES:
        raise DataError(f"the model has {len(classes):,} classes; the page shows a confusion "
                        f"matrix of every pair, for at most {MAX_PAGE_CLASSES:,} classes")
    if not np.isin(y_test, classes).all():
        raise DataError("the test labels include classes the model does not know")
    if compare is None:
        compare, seconds = train_comparison(model, X_train, y_train, l2=compare_l2,
                                            backend=backend, n_threads=n_threads,
                                            random_state=random_state)
        description = (f"Trained by this page's generator on the {len(y_train):,} training "
                       f"images with the model's settings and L2 {compare_l2:g} "
                       f"({_settings(compare)}, {compare.backend_} backend, seed "
                       f"{random_state}) in {seconds:.1f} s")
    else:
        if not np.array_equal(compare.classes_, classes) or compare.coef_.shape != \
                model.coef_.shape or compare.preprocessing != model.preprocessing:
            raise DataError("the comparison model must have the model's classes, input size "
                            "and preprocessing")
        description = f"{compare_name or 'the model given'}: {_settings(compare)}"
    proba = model.predict_proba(X_test)
    predicted = classes[proba.argmax(axis=1)]
    drawing = side == SIDE
    return {
        "heading": f"How {model_name} reads {'a digit' if drawing else 'an image'}",
        "fastlr_version": __version__,
        "classes": [str(c) for c in classes.tolist()],
        "side": side,
        "preprocessing": model.preprocessing,
        # The recipe of images.mnist_like; the pad is offered only when the model takes its
        # images, as ``fastlr predict`` reads image files only for them.
        "drawing": ({"side": SIDE, "box": BOX, "centre": CENTRE,
                     "ink_threshold": INK_THRESHOLD} if drawing else None),
        "model": _model_entry(model, X_test, y_test, f"{model_name}: {_settings(model)}"),
        "compare": _model_entry(compare, X_test, y_test, description),
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
        "mean_image": _float32_base64(
            apply_preprocessing(model.preprocessing, X_train).mean(axis=0, dtype=np.float64)),
        "confusion": confusion_matrix(y_test, predicted, classes).tolist(),
        "mistakes": _mistakes(X_test, y_test, classes, proba),
    }


def _script_json(data):
    """JSON safe inside a <script> element: no '<', '>' or '&' that could end it."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(data):
    """The page's HTML text: ``page_assets/page.html`` with its style, script and data inline."""
    template = (ASSETS / "page.html").read_text(encoding="utf-8")
    parts = {
        "<!-- fastlr:title -->": html.escape(data["heading"]),
        "/* fastlr:style */": (ASSETS / "page.css").read_text(encoding="utf-8"),
        "/* fastlr:script */": (ASSETS / "page.js").read_text(encoding="utf-8"),
        "/* fastlr:data */": _script_json(data),
    }
    for marker, text in parts.items():
        template = template.replace(marker, text)
    return template


def write_page(model, X_train, y_train, X_test, y_test, out, **options):
    """Write the page to ``out`` (one .html file, parent directories created).

    Parameters are those of :func:`page_data`.

    Returns
    -------
    dict
        ``path``, ``bytes``, ``seconds`` and the page's ``data``.

    Raises
    ------
    DataError
        If the data does not fit the model (see :func:`page_data`).
    WriteError
        If ``out`` cannot be written (through :func:`fastlr.atomic.atomic_write`: an existing
        page is left as it was).
    """
    start = time.perf_counter()
    data = page_data(model, X_train, y_train, X_test, y_test, **options)
    text = render_page(data)
    out = write_text(out, text)
    return {"path": out, "bytes": len(text.encode("utf-8", "backslashreplace")), "seconds": time.perf_counter() -
            start, "data": data}
