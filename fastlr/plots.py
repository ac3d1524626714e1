"""Figures of a model and its data, drawn with matplotlib's Agg canvas (no display needed).

Every function returns a :class:`matplotlib.figure.Figure` that is not registered with pyplot,
so nothing is shown and nothing leaks between calls; :func:`save_figure` writes it to a file.
Images are rows of D = H * W pixels, drawn as H x W images: ``image_shape`` is (H, W), by
default square (see :func:`fastlr.datasets.image_shape_of`). Class labels are drawn as given:
callers pass the names a data set gives its labels.

Colours: weights and differences use RdBu centred at 0, blue for a class and red against it;
pixel intensities use grey, ink dark on white as on paper.
"""

from pathlib import Path

import functools

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .atomic import atomic_write
from .datasets import image_shape_of

WEIGHT_CMAP = "RdBu"
INK_CMAP = "gray_r"


def plain_text(draw):
    """Make the figure function ``draw`` take its text as plain text.

    Titles and labels name files and classes, which are no math text (``$`` signs would start
    matplotlib's, and fail on a name like ``a$x^$.npz``) and not always text a font can draw (a
    file name's undecodable byte is a lone surrogate, written here as a backslash escape).
    """
    @functools.wraps(draw)
    def plain(*args, **kwargs):
        with matplotlib.rc_context({"text.parse_math": False}):
            return draw(*_drawable(args), **_drawable(kwargs))

    return plain


def _drawable(value):
    """``value`` with every string in it (through lists, tuples and dicts) drawable."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, (list, tuple)):
        return type(value)(_drawable(item) for item in value)
    if isinstance(value, dict):
        return {key: _drawable(item) for key, item in value.items()}
    return value


def new_figure(width, height):
    """A figure of ``width`` x ``height`` inches on an Agg canvas."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, dpi=100, bbox_inches="tight"):
    """Write ``fig`` to ``path`` atomically, in the format its extension names (PNG without
    one), creating the parent directory; returns ``path`` as a Path."""
    path = Path(path)
    with atomic_write(path) as fh:
        fig.savefig(fh, format=path.suffix[1:].lower() or "png", dpi=dpi,
                    bbox_inches=bbox_inches)
    return path


def _image(row, image_shape):
    return np.asarray(row, dtype=np.float64).reshape(image_shape or image_shape_of(row.size))


def robust_limit(values, percentile=99.5):
    """A symmetric colour limit: the ``percentile`` of ``|values|``, so that a few extreme
    pixels (weights of pixels almost never inked) do not wash out the rest."""
    limit = float(np.percentile(np.abs(values), percentile))
    return limit or float(np.abs(values).max()) or 1.0


def _bare(ax):
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


@plain_text
def weights_figure(coef, classes, title=None, image_shape=None, first_epoch=None):
    """The weight vector of each class as an image; with ``first_epoch``, the weights after
    the first epoch of the same training above the final ones.

    The first epoch's weights read as digits: after one pass each class's weights are still
    close to its mean image against the others'. The later epochs, which buy the last point of
    accuracy, add weight to pixels that are rarely inked and so rarely corrected: the final
    images look speckled. Both are the same model's, so the picture costs no accuracy.

    Each set of weights has its own colour scale, symmetric about 0 and saturating at the
    99.5th percentile of its ``|coef|``. C classes take one row a set when C <= 12, else 2.

    Parameters
    ----------
    coef : (C, D) array
    classes : (C,) labels, used as panel titles
    title : str, optional
    image_shape : (H, W), H * W = D, optional
    first_epoch : (coef (C, D), caption, final_caption), optional
        The weights after the first epoch, and what to say of them and of the final weights
        (their test accuracies).

    Returns
    -------
    Figure with C image axes and one colorbar axis per set of weights.
    """
    sets = [(np.asarray(coef, dtype=np.float64), None)]
    if first_epoch is not None:
        sets = [(np.asarray(first_epoch[0], dtype=np.float64), first_epoch[1]),
                (sets[0][0], first_epoch[2])]
    n_classes = sets[0][0].shape[0]
    rows_per_set = 2 if first_epoch is None or n_classes > 12 else 1
    n_cols = -(-n_classes // rows_per_set)
    n_rows = rows_per_set * len(sets)
    captioned = first_epoch is not None
    fig = new_figure(1.6 * n_cols + 1.0, 1.95 * n_rows + (0.45 * len(sets) if captioned else 0))
    grid = fig.add_gridspec(n_rows, n_cols + 1, width_ratios=[1] * n_cols + [0.08],
                            wspace=0.08, hspace=0.45 if captioned else 0.18)
    for index, (weights, caption) in enumerate(sets):
        limit = robust_limit(weights)
        top = index * rows_per_set
        image = None
        for k in range(n_classes):
            ax = fig.add_subplot(grid[top + k // n_cols, k % n_cols])
            image = ax.imshow(_image(weights[k], image_shape), cmap=WEIGHT_CMAP, vmin=-limit,
                              vmax=limit, interpolation="nearest")
            ax.set_title(str(classes[k]), fontsize=14 if len(str(classes[k])) <= 2 else 10,
                         pad=3)
            ax.axis("off")
            if k == 0 and caption:
                ax.annotate(caption, (0, 1), xycoords="axes fraction", xytext=(0, 22),
                            textcoords="offset points", fontsize=11, fontweight="bold",
                            va="bottom")
        extend = "both" if np.abs(weights).max() > limit else "neither"
        bar = fig.colorbar(image, cax=fig.add_subplot(grid[top:top + rows_per_set, n_cols]),
                           extend=extend)
        bar.set_label("weight (blue: for the class, red: against)" if not captioned else
                      "weight (blue: for,\nred: against)")
    if title:
        # Above the captions of a figure with two sets of weights.
        fig.suptitle(title, fontsize=12, y=1.06 if captioned else 0.98)
    return fig


@plain_text
def curves_figure(history, title=None):
    """Loss and accuracy per epoch, on the training data and on the set scored after every
    epoch, if the history has one.

    Parameters
    ----------
    history : list of dict
        Records with ``epoch``, ``train_loss``, ``train_accuracy`` and optionally
        ``test_loss``, ``test_accuracy`` (the test set, scored by ``train``) or ``val_loss``,
        ``val_accuracy`` (a validation set: early stopping's, or ``fit``'s ``eval_set``); see
        :func:`fastlr.sgd.train`.

    Returns
    -------
    Figure with two axes: loss, accuracy.
    """
    epochs = [r["epoch"] for r in history]
    fig = new_figure(10, 3.8)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * r["train_accuracy"] for r in history], "o-", label="train")
    for name, label in (("test", "test"), ("val", "validation")):
        if all(f"{name}_loss" in r for r in history):
            ax_loss.plot(epochs, [r[f"{name}_loss"] for r in history], "s-", label=label)
            ax_acc.plot(epochs, [100 * r[f"{name}_accuracy"] for r in history], "s-",
                        label=label)
    ax_loss.set_ylabel("mean cross-entropy")
    ax_acc.set_ylabel("accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _annotate(ax, values, text, dark):
    """Write ``text[i][j]`` in each cell, white where ``dark[i, j]``."""
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if text[i][j]:
                ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7.5,
                        color="white" if dark[i, j] else "black")


@plain_text
def confusion_figure(counts, classes):
    """The confusion matrix in counts and row-normalized (% of each true class).

    Parameters
    ----------
    counts : (C, C) int, rows the true class, columns the predicted class

    Returns
    -------
    Figure with two matrix axes and their two colorbars.
    """
    counts = np.asarray(counts)
    rates = 100 * counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig = new_figure(13, 5.6)
    ax_counts, ax_rates = fig.subplots(1, 2)
    ticks = np.arange(len(classes))
    off_diag = ~np.eye(len(classes), dtype=bool)
    count_max = max(int(counts[off_diag].max()), 1)
    # The diagonal would swamp the colour scale; the scale shows the errors.
    image = ax_counts.imshow(np.where(off_diag, counts, 0), cmap="Reds", vmin=0,
                             vmax=count_max)
    fig.colorbar(image, ax=ax_counts, fraction=0.046, pad=0.04,
                 label="images (off the diagonal)")
    _annotate(ax_counts, counts, [[str(v) for v in row] for row in counts],
              (counts > 0.6 * count_max) & off_diag)
    rate_max = max(float(rates[off_diag].max()), 1e-9)
    image = ax_rates.imshow(np.where(off_diag, rates, 0), cmap="Reds", vmin=0, vmax=rate_max)
    fig.colorbar(image, ax=ax_rates, fraction=0.046, pad=0.04,
                 label="% of the true class (off the diagonal)")
    _annotate(ax_rates, rates,
              [[f"{v:.1f}" if (i == j or v >= 0.05) else "" for j, v in enumerate(row)]
               for i, row in enumerate(rates)],
              (rates > 0.6 * rate_max) & off_diag)
    for ax, title in ((ax_counts, "counts"), (ax_rates, "row-normalized (%)")):
        ax.set_xticks(ticks, [str(c) for c in classes])
        ax.set_yticks(ticks, [str(c) for c in classes])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
    fig.tight_layout()
    return fig


@plain_text
def gallery_figure(rows, n_cols, image_shape=None):
    """Misclassified images, one row per (true, predicted) pair.

    Parameters
    ----------
    rows : list of (label, images (K, D), probabilities (K,))
        ``label`` is written at the left of the row; each image is titled with the probability
        the model gave its (wrong) prediction. K <= n_cols; missing cells stay empty.

    Returns
    -------
    Figure with ``len(rows) * n_cols`` axes.
    """
    fig = new_figure(1.15 * n_cols + 1.2, 1.35 * len(rows))
    axes = np.atleast_2d(fig.subplots(len(rows), n_cols, squeeze=False))
    for (label, images, probs), ax_row in zip(rows, axes):
        for k, ax in enumerate(ax_row):
            _bare(ax)
            if k < len(images):
                ax.imshow(_image(images[k], image_shape), cmap=INK_CMAP, vmin=0,
                          vmax=max(float(np.max(images[k])), 1e-9), interpolation="nearest")
                ax.set_title(f"p={probs[k]:.2f}", fontsize=9, pad=2)
        ax_row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10)
    fig.subplots_adjust(wspace=0.05, hspace=0.35)
    return fig


@plain_text
def templates_figure(class_means, overall_mean, coef, classes, correlations, image_shape=None):
    """Class-mean images beside the weights.

    Three rows of C panels: the mean image of each class, that mean minus the mean of all
    images, and the class's weights; ``correlations[k]`` (of rows two and three) titles the
    weights.

    Returns
    -------
    Figure with 3 C image axes.
    """
    n_classes = len(classes)
    fig = new_figure(1.25 * n_classes + 1.8, 4.5)
    axes = fig.subplots(3, n_classes, squeeze=False)
    diffs = np.asarray(class_means) - np.asarray(overall_mean)[None, :]
    diff_limit = float(np.abs(diffs).max()) or 1.0
    weight_limit = robust_limit(coef)
    for k in range(n_classes):
        axes[0, k].imshow(_image(class_means[k], image_shape), cmap=INK_CMAP, vmin=0,
                          vmax=float(np.max(class_means)) or 1.0)
        axes[0, k].set_title(str(classes[k]), fontsize=12 if len(str(classes[k])) <= 2 else 9)
        axes[1, k].imshow(_image(diffs[k], image_shape), cmap=WEIGHT_CMAP, vmin=-diff_limit,
                          vmax=diff_limit)
        axes[2, k].imshow(_image(coef[k], image_shape), cmap=WEIGHT_CMAP, vmin=-weight_limit,
                          vmax=weight_limit)
        axes[2, k].set_xlabel(f"r = {correlations[k]:.2f}", fontsize=10)
        for ax in axes[:, k]:
            _bare(ax)
    for ax, label in zip(axes[:, 0], ("class\nmean", "mean minus\nmean of\nall images",
                                      "weights")):
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10)
    fig.subplots_adjust(wspace=0.06, hspace=0.12)
    return fig


@plain_text
def pairwise_figure(train_accuracy, test_accuracy, classes):
    """Heat maps of the accuracy of a binary linear model for every pair of classes.

    Parameters
    ----------
    train_accuracy, test_accuracy : (C, C) float in [0, 1], symmetric, NaN on the diagonal

    Returns
    -------
    Figure with two matrix axes and one colorbar.
    """
    train = 100 * np.asarray(train_accuracy, dtype=np.float64)
    test = 100 * np.asarray(test_accuracy, dtype=np.float64)
    low = float(np.floor(np.nanmin(np.concatenate([train.ravel(), test.ravel()]))))
    fig = new_figure(13, 5.8)
    ax_train, ax_test = fig.subplots(1, 2)
    ticks = np.arange(len(classes))
    image = None
    for ax, values, title in ((ax_train, train, "training accuracy (%)"),
                              (ax_test, test, "test accuracy (%)")):
        image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=low, vmax=100)
        # Only a perfect pair reads 100; 99.96 reads 99.9, not 100.0.
        text = [["" if np.isnan(v) else ("100" if v == 100 else f"{min(v, 99.9):.1f}")
                 for v in row] for row in values]
        _annotate(ax, values, text, np.nan_to_num(values, nan=100) < low + 0.6 * (100 - low))
        ax.set_xticks(ticks, [str(c) for c in classes])
        ax.set_yticks(ticks, [str(c) for c in classes])
        ax.set_title(title)
    fig.colorbar(image, ax=[ax_train, ax_test], fraction=0.025, pad=0.02,
                 label="accuracy of the binary model (%)")
    return fig
