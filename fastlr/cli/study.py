"""``fastlr plot`` and ``fastlr explain``: figures and a report on what a saved model learned."""

import os

from ..datasets import class_label, image_shape_of
from ..errors import DataError, ModelFileError
from ..explain import PAIR_EPOCHS, explain, first_epoch_captions, first_epoch_weights
from ..model import SoftmaxRegression
from ..page import COMPARE_L2
from ..pixels import Pixels
from ..validation import param_type
from .common import (Parser, UsageError, add_backend, add_data_dir, add_model, add_seed,
                     load_data, positive_int)


def add_commands(commands):
    """Add ``plot`` (weights, curves) and ``explain`` to the subcommands ``commands``."""
    plot = commands.add_parser(
        "plot", help="figures of a saved model: its weights or its training curves",
        description="Draw a figure of a model saved by `train --out`, as a PNG file.")
    figures = plot.add_subparsers(dest="figure", metavar="FIGURE", parser_class=Parser)
    weights = _add_figure(
        figures, "weights", cmd_plot_weights, help="each class's weight vector as an image",
        description="Draw each class's weights as the image they multiply: blue pixels vote "
                    "for the class, red ones against. Above them, the weights after the first "
                    "epoch of the same training (replayed on the data set the model was "
                    "trained on), which read as templates of each class: the later epochs buy "
                    "the last point of accuracy with weights on rarely inked pixels, which "
                    "look speckled.")
    add_data_dir(weights, model_default=True)
    weights.add_argument("--final-only", action="store_true",
                         help="draw the final weights only (no replay of the first epoch, no "
                              "data needed)")
    _add_figure(figures, "curves", cmd_plot_curves,
                help="loss and accuracy over the epochs",
                description="Plot the training and test loss and accuracy after every epoch, "
                            "from the history stored in the model file.")
    plot.set_defaults(handler=lambda args: _missing_figure(plot))

    explain = commands.add_parser(
        "explain", help="a report on what the model learned and why it works",
        description="Write report.md and its figures: the weights, the class means beside "
                    "them, the confusion matrix, per-class accuracy, the most confused pairs "
                    "with the mistakes themselves, and, for each pair of classes (the 45 pairs of "
                    "digits on MNIST), how well a two-class linear model separates them. Takes "
                    "some 10-30 s on MNIST with the numpy backend.")
    add_model(explain)
    add_data_dir(explain, model_default=True)
    explain.add_argument("--out", default=None, metavar="DIR",
                         help="directory for report.md and its PNG figures (default: report); "
                              "with --html, the page's file (default: report.html)")
    explain.add_argument("--deskew", action="store_true",
                         help="deskew the images before the model and the pairwise models see "
                              "them (a model trained with --deskew does so by itself)")
    explain.add_argument("--pair-epochs", type=positive_int, default=None,
                         help=f"epochs of each pairwise model (default: {PAIR_EPOCHS})")
    add_backend(explain)
    add_seed(explain, help="seed of the pairwise models (default: %(default)s)")
    explain.add_argument("--html", action="store_true",
                         help="write instead one self-contained HTML page (no network needed): "
                              "draw a digit and watch the model decide, its weights beside "
                              "those of a small-L2 model, the confusion matrix and the "
                              "mistakes. --backend, --threads and --seed train the comparison "
                              "model")
    explain.add_argument("--compare", metavar="MODEL2",
                         help="with --html: show this saved model beside, instead of training "
                              "one")
    explain.add_argument("--compare-l2", type=param_type("alpha"), default=None,
                         help=f"with --html: the L2 penalty of the comparison model trained by "
                              f"the page (default: {COMPARE_L2:g})")
    explain.set_defaults(handler=cmd_explain)


def _add_figure(figures, name, handler, help, description):
    """``plot NAME MODEL [--out NAME.png]``, drawn by ``handler``."""
    figure = figures.add_parser(name, help=help, description=description)
    add_model(figure)
    figure.add_argument("--out", default=f"{name}.png", metavar="FILE.png",
                        help="where to write the figure (default: %(default)s)")
    figure.set_defaults(handler=handler)
    return figure


def _missing_figure(parser):
    raise UsageError(f"{parser.prog}: choose a figure: weights or curves (see --help)")


def _load_with_history(path):
    model = SoftmaxRegression.load(path)
    if not model.history_:
        raise ModelFileError(f"{path}: the model file holds no training history")
    return model


def cmd_plot_weights(args):
    from ..plots import save_figure, weights_figure
    model = SoftmaxRegression.load(args.model)
    deskewed = ", deskewed pixels" if model.preprocessing == "deskew" else ""
    record = model.dataset_ or {}
    trained_on = f" ({record['title']})" if record else ""
    names = [class_label(label.item(), record.get("class_names")) for label in model.classes_]
    first_epoch, note = None, ""
    if not (args.final_only or record or args.dataset or args.data_dir):
        note = (" (the final weights only: the model file names no data set to replay its "
                "first epoch on; pass --dataset NAME or --data-dir DIR)")
    elif not args.final_only:
        # The bytes, as train gives them to fit: the replay is then the model's own epoch.
        try:
            dataset = load_data(args, model, pixels=True)
        except DataError as exc:
            raise DataError(f"{exc}; or pass --final-only to draw the final weights alone") \
                from None
        coef, intercept = first_epoch_weights(model, Pixels(dataset.X_train), dataset.y_train)
        first_epoch = (coef, *first_epoch_captions(model, coef, intercept,
                                                   Pixels(dataset.X_test), dataset.y_test))
    figure = weights_figure(
        model.coef_, names, image_shape=image_shape_of(model.n_features_in_, record),
        title=f"weights of {os.path.basename(args.model)}{trained_on}{deskewed}",
        first_epoch=first_epoch)
    print(f"wrote {save_figure(figure, args.out)}{note}")
    return 0


def cmd_plot_curves(args):
    from ..plots import curves_figure, save_figure
    model = _load_with_history(args.model)
    record = model.dataset_ or {}
    trained_on = f" on {record['title']}" if record else ""
    figure = curves_figure(model.history_,
                           title=f"training of {os.path.basename(args.model)}{trained_on}")
    print(f"wrote {save_figure(figure, args.out)}")
    return 0


def cmd_explain(args):
    if args.html:
        return _explain_page(args)
    if args.compare or args.compare_l2 is not None:
        raise UsageError("fastlr explain: --compare and --compare-l2 go with --html")
    model = SoftmaxRegression.load(args.model)
    dataset = load_data(args, model)
    numbers = explain(model, *dataset.arrays(), args.out or "report",
                      model_name=os.path.basename(args.model), dataset=dataset.record(),
                      deskew=args.deskew,
                      pair_epochs=args.pair_epochs or PAIR_EPOCHS, backend=args.backend,
                      n_threads=args.threads, random_state=args.seed)
    print(numbers["paragraph"])
    print(f"wrote {numbers['files']['report']} and {len(numbers['files']) - 1} figures in "
          f"{numbers['seconds']:.1f} s")
    return 0


def _explain_page(args):
    """``explain --html``: the interactive page of ``fastlr/page.py``."""
    from ..page import write_page
    if args.deskew or args.pair_epochs:
        raise UsageError("fastlr explain --html: --deskew and --pair-epochs belong to the "
                         "Markdown report; the page runs the model as predict does")
    if args.compare and args.compare_l2 is not None:
        raise UsageError("fastlr explain --html: give --compare or --compare-l2, not both")
    model = SoftmaxRegression.load(args.model)
    compare = SoftmaxRegression.load(args.compare) if args.compare else None
    X_train, y_train, X_test, y_test = load_data(args, model).arrays()
    options = {"compare_l2": args.compare_l2} if args.compare_l2 is not None else {}
    page = write_page(model, X_train, y_train, X_test, y_test, args.out or "report.html",
                      model_name=os.path.basename(args.model), compare=compare,
                      compare_name=args.compare and os.path.basename(args.compare),
                      backend=args.backend, n_threads=args.threads, random_state=args.seed,
                      **options)
    data = page["data"]
    print(f"test accuracy {data['model']['test_accuracy']:.2%}; beside it, L2 "
          f"{data['compare']['l2']:g}: {data['compare']['test_accuracy']:.2%}")
    print(f"wrote {page['path']} ({page['bytes'] / 1e3:,.0f} kB) in {page['seconds']:.1f} s")
    return 0
