"""Why a linear model reads digits: the numbers and figures of ``python -m fastlr explain``.

Shapes: N training images, M test images, D = H * W pixels, C classes.

:func:`explain` writes ``report.md`` and its figures into a directory: the weights, the class
means beside them, the confusion matrix, per-class accuracy, the most confused pairs with a
gallery of mistakes, and the pairwise linear separability of the classes: for each pair of
classes, a two-class model trained by the same engine, with its training and test accuracy.
The report ends with a paragraph written from those numbers.
"""

import copy
import time
from itertools import combinations
from pathlib import Path

import numpy as np

from . import atomic
from .datasets import class_label, image_shape_of
from .errors import DataError
from .model import SoftmaxRegression
from .preprocess import apply_preprocessing
from .validation import plain

# The pairwise models: the engine's defaults with 5 epochs, so that the 45 of them (about 12,000
# images each on MNIST) train in seconds. More epochs, a larger rate or momentum help the
# hardest pairs only a little (docs/journal/epyc-zen3.md).
PAIR_EPOCHS = 5
PAIR_BATCH_SIZE = 64
PAIR_LEARNING_RATE = 1.0

GALLERY_PAIRS = 4
GALLERY_IMAGES = 8

# The report trains a model per pair of classes, C (C - 1) / 2 of them: 45 on MNIST, 4,950 at
# this cap. A model file may declare many more classes (21,000 fit in its size limit), which
# would be millions of models and a confusion matrix of gigabytes.
MAX_REPORT_CLASSES = 100


def confusion_matrix(y_true, y_pred, classes):
    """Counts (C, C) int64: row ``i``, column ``j`` counts images of ``classes[i]`` predicted as
    ``classes[j]``."""
    classes = np.asarray(classes)
    index_true = np.searchsorted(classes, y_true)
    index_pred = np.searchsorted(classes, y_pred)
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(counts, (index_true, index_pred), 1)
    return counts


def most_confused(counts, k):
    """The ``k`` largest off-diagonal cells of a confusion matrix, as (i, j, count), largest
    first (ties broken by position)."""
    cells = [(int(counts[i, j]), i, j) for i in range(counts.shape[0])
             for j in range(counts.shape[1]) if i != j and counts[i, j] > 0]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [(i, j, n) for n, i, j in cells[:k]]


class _FirstEpochDone(Exception):
    """Stops the replay of :func:`first_epoch_weights` after its first epoch."""


def first_epoch_weights(model, X_train, y_train):
    """The weights ``model`` had after its first epoch, replayed: a model of the same
    hyperparameters (seed, backend and threads included) fitted on the same training data,
    stopped when its first epoch ends.

    The replay is the model's own first epoch when it is given what the model was trained on
    in the same form (the CLI trains on MNIST's bytes, :class:`~fastlr.pixels.Pixels`); on
    other forms of the same images, the same within the backends' tolerances.

    Parameters
    ----------
    model : fitted SoftmaxRegression
    X_train : (N, D) raw pixels (the model applies its own preprocessing), y_train : (N,)

    Returns
    -------
    coef (C, D), intercept (C,)
    """
    replay = SoftmaxRegression(**dict(model.get_params(), verbose=False))
    weights = {}

    def stop_after_the_first(record):
        weights["coef"], weights["intercept"] = replay.coef_.copy(), replay.intercept_.copy()
        raise _FirstEpochDone

    try:
        replay.fit(X_train, y_train, on_epoch=stop_after_the_first)
    except _FirstEpochDone:
        pass
    return weights["coef"], weights["intercept"]


def first_epoch_captions(model, coef, intercept, X_test, y_test):
    """What the weights figure says of the first epoch's weights and of the final ones: their
    test accuracies. ``X_test`` is what the model is given (it applies its own
    preprocessing). Returns (first, final)."""
    after_one = copy.copy(model)
    after_one.coef_, after_one.intercept_ = coef, intercept
    early = float(after_one.score(X_test, y_test))
    final = float(model.score(X_test, y_test))
    return (f"after the first epoch: {_pct(early, 2)} of the test images",
            f"the final weights: {_pct(final, 2)}")


def template_correlations(coef, class_means, overall_mean):
    """Pearson correlation, over the pixels, of each weight image with its class mean minus the
    overall mean: how much of each weight image is a template. Returns (C,) float64."""
    diffs = np.asarray(class_means, np.float64) - np.asarray(overall_mean, np.float64)[None, :]
    coef = np.asarray(coef, np.float64)
    a = coef - coef.mean(axis=1, keepdims=True)
    b = diffs - diffs.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0)


def pairwise_separability(X_train, y_train, X_test, y_test, classes=None, *,
                          epochs=PAIR_EPOCHS, batch_size=PAIR_BATCH_SIZE,
                          learning_rate=PAIR_LEARNING_RATE, backend="auto", n_threads=None,
                          random_state=0):
    """Train a two-class SoftmaxRegression for every pair of classes and score it.

    For the pair (a, b) the model is fit on the training images of a and b only, with the
    given settings and ``random_state``, and scored on the training and the test images of a
    and b.

    Parameters
    ----------
    X_train : (N, D), y_train : (N,), X_test : (M, D), y_test : (M,)
    classes : (C,) labels, default the sorted labels of y_train

    Returns
    -------
    dict
        ``classes`` (C,), ``train_accuracy`` and ``test_accuracy`` (C, C) float64, symmetric,
        NaN on the diagonal; ``settings`` (the training settings); ``seconds`` (wall time).
    """
    classes = np.unique(y_train) if classes is None else np.asarray(classes)
    n_classes = len(classes)
    train_accuracy = np.full((n_classes, n_classes), np.nan)
    test_accuracy = np.full((n_classes, n_classes), np.nan)
    settings = {"epochs": int(epochs), "batch_size": int(batch_size),
                "learning_rate": float(learning_rate), "lr_schedule": "linear",
                "random_state": random_state}
    start = time.perf_counter()
    for i, j in combinations(range(n_classes), 2):
        pair = classes[[i, j]]
        in_train = np.isin(y_train, pair)
        in_test = np.isin(y_test, pair)
        model = SoftmaxRegression(epochs=epochs, batch_size=batch_size,
                                  learning_rate=learning_rate, backend=backend,
                                  n_threads=n_threads, random_state=random_state)
        model.fit(X_train[in_train], y_train[in_train])
        train_accuracy[i, j] = train_accuracy[j, i] = model.score(X_train[in_train],
                                                                  y_train[in_train])
        if in_test.any():
            test_accuracy[i, j] = test_accuracy[j, i] = model.score(X_test[in_test],
                                                                    y_test[in_test])
    return {"classes": classes, "train_accuracy": train_accuracy,
            "test_accuracy": test_accuracy, "settings": settings,
            "seconds": time.perf_counter() - start}


def _pairs_by_train_accuracy(pairwise):
    """Every pair (i, j), i < j, with its accuracies, hardest (lowest training accuracy) first."""
    train, test = pairwise["train_accuracy"], pairwise["test_accuracy"]
    pairs = [(train[i, j], test[i, j], i, j)
             for i, j in combinations(range(len(pairwise["classes"])), 2)]
    pairs.sort(key=lambda p: (p[0], p[1], p[2], p[3]))
    return pairs


def _pct(value, digits=1):
    return f"{100 * value:.{digits}f}%"


NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight",
                9: "nine", 10: "ten", 11: "eleven", 12: "twelve"}


def _count(n):
    """A small count in words ("ten"), a larger one in digits."""
    return NUMBER_WORDS.get(n, str(n))


def _pair(a, b):
    """Two class labels as a pair: "3/5", or "Shirt vs T-shirt/top" when a name holds a slash."""
    return f"{a} vs {b}" if "/" in f"{a}{b}" else f"{a}/{b}"


def answer_paragraph(numbers):
    """The answer to "are the classes almost linearly separable?", written from the numbers
    :func:`explain` computed (the ``numbers`` dict it returns)."""
    classes = numbers["labels"]
    n_classes = len(classes)
    model_words = f"the {_count(n_classes)}-class model"
    pairs = numbers["pairs_hardest_first"]
    n_pairs = len(pairs)
    n99 = sum(p[0] >= 0.99 for p in pairs)
    n100 = sum(p[0] >= 1.0 for p in pairs)
    n99_test = sum(p[1] >= 0.99 for p in pairs)
    settings = numbers["pair_settings"]
    if n99 >= 0.85 * n_pairs:
        verdict = "Pair by pair, the classes are almost linearly separable"
    elif n99 >= 0.5 * n_pairs:
        verdict = "Pair by pair, most classes are nearly linearly separable"
    else:
        verdict = "Even pair by pair, many classes are not linearly separable"
    hardest = ", ".join(f"{_pair(classes[i], classes[j])} ({_pct(tr)} train, {_pct(te)} test)"
                        for tr, te, i, j in pairs[:3])
    confused = numbers["confused_pairs"]
    confused_text = ", ".join(_pair(classes[i], classes[j]) for i, j, _ in confused[:3])
    hardest_set = {frozenset((i, j)) for _, _, i, j in pairs[:5]}
    shared = sum(frozenset((i, j)) in hardest_set for i, j, _ in confused[:3])
    corr = numbers["template_correlations"]
    preprocessing = " deskewed" if numbers["preprocessing"] == "deskew" else " raw"
    perfect = f"{n100} of them" if n100 else "none of them"
    text = (
        f"{verdict}: a two-class model of the same kind ({settings['epochs']} epochs of SGD on "
        f"the{preprocessing} pixels of the pair's training images) separates {n99} of the "
        f"{n_pairs} pairs to at least 99% on the training data ({perfect} perfectly) and "
        f"{n99_test} to at least 99% on the test data. The hardest pairs are {hardest}. ")
    if not confused:
        text += f"{model_words.capitalize()} confuses no pair on the test images. "
    elif shared:
        text += (f"{model_words.capitalize()} errs most on the same kind of pairs (its most "
                 f"frequent confusions: {confused_text}). ")
    else:
        text += f"{model_words.capitalize()}'s most frequent confusions are {confused_text}. "
    others = "the other" if n_classes == 2 else f"the {_count(n_classes - 1)} others"
    text += (
        f"All {n_classes} classes at once are harder: with one weight image per class, "
        f"each of which must outscore {others}, {model_words} gets "
        f"{_pct(numbers['train_accuracy'])} of the training and "
        f"{_pct(numbers['test_accuracy'])} of the test images right. Its weight images are "
        f"partly templates: each correlates with its class mean minus the mean of all images "
        f"at r = {corr.min():.2f} to {corr.max():.2f} (median {np.median(corr):.2f}); the rest "
        f"of each weight image is what tells the class from its look-alikes.")
    return text


def explain(model, X_train, y_train, X_test, y_test, out_dir, *, model_name="model",
            dataset=None, deskew=False, pair_epochs=PAIR_EPOCHS, backend="auto", n_threads=None,
            random_state=0):
    """Write ``report.md`` and its figures into ``out_dir``.

    Parameters
    ----------
    model : fitted SoftmaxRegression
    X_train : (N, D), y_train : (N,), X_test : (M, D), y_test : (M,)
        Raw pixels; the model's own preprocessing is applied to what it is shown.
    out_dir : path, created if missing
    model_name : str, how the report names the model
    dataset : dict, optional
        What X and y are: a record with ``title``, ``image_shape`` and ``class_names`` (see
        :meth:`fastlr.data.Dataset.record`); by default the one in the model's file, if any.
    deskew : bool
        Deskew the images before the model (and the pairwise models) see them, also when the
        model was trained without deskewing. A model trained with ``preprocessing="deskew"``
        deskews anyway.
    pair_epochs : int, epochs of each pairwise model
    backend, n_threads, random_state : settings of the pairwise models

    Returns
    -------
    dict
        The numbers of the report, the ``paragraph``, the written ``files`` and ``seconds``.
    """
    from . import plots  # matplotlib loads only when a report is drawn

    start = time.perf_counter()
    out_dir = Path(out_dir)
    atomic.make_directory(out_dir)
    classes = model.classes_
    if len(classes) > MAX_REPORT_CLASSES:
        raise DataError(f"{model_name} has {len(classes):,} classes; the report trains a model "
                        f"for each pair of classes, and explains at most {MAX_REPORT_CLASSES} "
                        f"classes")
    missing = np.setdiff1d(classes, y_train)
    if len(missing):
        raise DataError(f"{model_name} knows classes that have no training image here "
                        f"({plain(missing)}); the report needs images of every class")
    dataset = dataset or getattr(model, "dataset_", None) or {}
    image_shape = image_shape_of(X_train.shape[1], dataset)
    labels = [class_label(c.item(), dataset.get("class_names")) for c in classes]
    view = "deskew" if (deskew or model.preprocessing == "deskew") else None
    # The pixels as the model sees them: figures and pairwise models use these.
    seen_train = apply_preprocessing(view, X_train)
    seen_test = apply_preprocessing(view, X_test)
    # A model that deskews by itself gets the raw pixels, so nothing is deskewed twice.
    model_input_train = X_train if model.preprocessing else seen_train
    model_input_test = X_test if model.preprocessing else seen_test

    proba = model.predict_proba(model_input_test)
    predicted = classes[proba.argmax(axis=1)]
    train_predicted = model.predict(model_input_train)
    counts = confusion_matrix(y_test, predicted, classes)
    per_class = np.diag(counts) / np.maximum(counts.sum(axis=1), 1)

    class_means = np.stack([seen_train[y_train == c].mean(axis=0) for c in classes])
    overall_mean = seen_train.mean(axis=0)
    correlations = template_correlations(model.coef_, class_means, overall_mean)

    pairwise = pairwise_separability(seen_train, y_train, seen_test, y_test, classes,
                                     epochs=pair_epochs, backend=backend, n_threads=n_threads,
                                     random_state=random_state)
    pairs = _pairs_by_train_accuracy(pairwise)
    symmetric = counts + counts.T
    confused_pairs = [(i, j, int(symmetric[i, j]))
                      for i, j, _ in most_confused(np.triu(symmetric, 1), 5)]

    numbers = {
        "classes": classes,
        "labels": labels,
        "dataset_title": dataset.get("title"),
        "image_shape": image_shape,
        "preprocessing": view,
        "test_accuracy": float(np.mean(predicted == y_test)),
        "train_accuracy": float(np.mean(train_predicted == y_train)),
        "per_class_accuracy": per_class,
        "confusion": counts,
        "confused_pairs": confused_pairs,
        "template_correlations": correlations,
        "pairwise": pairwise,
        "pairs_hardest_first": pairs,
        "pair_settings": pairwise["settings"],
    }
    numbers["paragraph"] = answer_paragraph(numbers)

    early_coef, early_intercept = first_epoch_weights(model, model_input_train, y_train)
    numbers["first_epoch_captions"] = first_epoch_captions(model, early_coef, early_intercept,
                                                           model_input_test, y_test)
    files = {}
    files["weights"] = plots.save_figure(
        plots.weights_figure(model.coef_, labels, image_shape=image_shape,
                             first_epoch=(early_coef, *numbers["first_epoch_captions"])),
        out_dir / "weights.png")
    files["templates"] = plots.save_figure(
        plots.templates_figure(class_means, overall_mean, model.coef_, labels, correlations,
                               image_shape=image_shape),
        out_dir / "templates.png")
    files["confusion"] = plots.save_figure(plots.confusion_figure(counts, labels),
                                           out_dir / "confusion.png")
    gallery_rows, gallery_pairs = [], []
    for i, j, n in most_confused(counts, GALLERY_PAIRS):
        wrong = np.flatnonzero((y_test == classes[i]) & (predicted == classes[j]))
        wrong = wrong[np.argsort(-proba[wrong, j], kind="stable")][:GALLERY_IMAGES]
        gallery_rows.append((f"true {labels[i]}\npredicted {labels[j]}",
                             seen_test[wrong], proba[wrong, j]))
        gallery_pairs.append((i, j, n))
    if gallery_rows:
        files["misclassified"] = plots.save_figure(
            plots.gallery_figure(gallery_rows, GALLERY_IMAGES, image_shape=image_shape),
            out_dir / "misclassified.png")
    files["pairwise"] = plots.save_figure(
        plots.pairwise_figure(pairwise["train_accuracy"], pairwise["test_accuracy"], labels),
        out_dir / "pairwise.png")

    numbers["seconds"] = time.perf_counter() - start
    report = _report_markdown(model, model_name, numbers, gallery_pairs, files,
                              len(y_train), len(y_test))
    files["report"] = out_dir / "report.md"
    atomic.write_text(files["report"], report)
    numbers["files"] = files
    return numbers


def _report_markdown(model, model_name, numbers, gallery_pairs, files, n_train, n_test):
    classes = numbers["labels"]
    height, width = numbers["image_shape"]
    trained_on = f" of {numbers['dataset_title']}" if numbers["dataset_title"] else ""
    params = model.get_params()
    pairwise = numbers["pairwise"]
    settings = numbers["pair_settings"]
    seen = "deskewed pixels" if numbers["preprocessing"] == "deskew" else "raw pixels"
    lines = [
        f"# What the model `{model_name}` learned",
        "",
        f"A softmax regression on {seen}: {model.coef_.shape[0]} classes x "
        f"{model.coef_.shape[1]} pixels, trained for {len(model.history_) or params['epochs']} "
        f"epochs of batch {params['batch_size']} at learning rate {params['learning_rate']:g} "
        f"({params['lr_schedule']} schedule). It gets **{_pct(numbers['test_accuracy'], 2)}** of "
        f"the {n_test:,} test images{trained_on} right "
        f"({_pct(numbers['train_accuracy'], 2)} of the {n_train:,} training images).",
        "",
        "## The answer",
        "",
        numbers["paragraph"],
        "",
        "## The weights",
        "",
        f"![weights]({files['weights'].name})",
        "",
        f"Each panel is one class's {height * width} weights drawn as the {height}x{width} image "
        f"they multiply: blue pixels raise the class's score when inked, red pixels lower it. "
        f"The top row is the same training after its first epoch, replayed with the model's "
        f"own settings ({numbers['first_epoch_captions'][0]}; "
        f"{numbers['first_epoch_captions'][1]}). One pass leaves each class's "
        f"weights close to its mean image against the others', so they read as templates; the "
        f"later epochs add weight to pixels that are rarely inked, and so rarely corrected, "
        f"which buys the last of the accuracy and speckles the final images.",
        "",
        "## Templates: the class means beside the weights",
        "",
        f"![class means and weights]({files['templates'].name})",
        "",
        "Top: the mean image of each class. Middle: that mean minus the mean of all training "
        "images. Bottom: the weights, with r, their correlation over the pixels with the middle "
        "row. A weight image that were a pure template would have r = 1.",
        "",
        "| class | " + " | ".join(str(c) for c in classes) + " |",
        "| --- | " + " | ".join("---:" for _ in classes) + " |",
        "| r | " + " | ".join(f"{r:.2f}" for r in numbers["template_correlations"]) + " |",
        "",
        "## Confusion matrix and per-class accuracy",
        "",
        f"![confusion matrix]({files['confusion'].name})",
        "",
        "Rows are the true class, columns the prediction; the colour shows the mistakes only.",
        "",
        "| class | test images | accuracy | most often taken for |",
        "| --- | ---: | ---: | --- |",
    ]
    counts = numbers["confusion"]
    for k, c in enumerate(classes):
        errors = counts[k].copy()
        errors[k] = -1
        other = int(np.argmax(errors))
        taken_for = f"{classes[other]} ({errors[other]})" if errors[other] > 0 else "-"
        lines.append(f"| {c} | {counts[k].sum():,} | {_pct(numbers['per_class_accuracy'][k], 1)}"
                     f" | {taken_for} |")
    lines += [
        "",
        "## The most confused pairs",
        "",
        "| pair | mistakes either way | true -> predicted | true <- predicted |",
        "| --- | ---: | ---: | ---: |",
    ]
    for i, j, n in numbers["confused_pairs"]:
        lines.append(f"| {_pair(classes[i], classes[j])} | {n} | {counts[i, j]} | "
                     f"{counts[j, i]} |")
    if "misclassified" in files:
        described = "; ".join(f"true {classes[i]} predicted {classes[j]} ({n} images)"
                              for i, j, n in gallery_pairs)
        lines += [
            "",
            f"![misclassified test images]({files['misclassified'].name})",
            "",
            f"The most frequent mistakes ({described}): the test images the model got wrong "
            f"with the highest confidence, each titled with the probability it gave the wrong "
            f"class, shown as the model saw them ({seen}).",
        ]
    n_pairs = len(numbers["pairs_hardest_first"])
    lines += [
        "",
        "## Pairwise linear separability",
        "",
        f"For each of the {n_pairs} pairs of classes, a two-class `SoftmaxRegression` trained "
        f"on that pair's training images only ({seen}, {settings['epochs']} epochs, batch "
        f"{settings['batch_size']}, learning rate {settings['learning_rate']:g} decaying "
        f"linearly, seed {settings['random_state']}), scored on the pair's training and test "
        f"images. The training accuracy of SGD is a lower bound on what the best linear "
        f"boundary reaches; 100% means the pair's training images are linearly separable. "
        f"The {n_pairs} models took {pairwise['seconds']:.1f} s.",
        "",
        f"![pairwise accuracy]({files['pairwise'].name})",
        "",
        "The hardest pairs:",
        "",
        "| pair | train accuracy | test accuracy |",
        "| --- | ---: | ---: |",
    ]
    for tr, te, i, j in numbers["pairs_hardest_first"][:10]:
        lines.append(f"| {_pair(classes[i], classes[j])} | {_pct(tr, 2)} | {_pct(te, 2)} |")
    lines += ["", f"The whole report took {numbers['seconds']:.1f} s to compute.", ""]
    return "\n".join(lines)
