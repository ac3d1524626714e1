"""``fastlr evaluate`` and ``fastlr predict``: use a saved model on the test set or on images."""

import json

import numpy as np

from ..datasets import class_label, image_shape_of
from ..errors import DataError
from ..model import SoftmaxRegression
from ..pixels import Pixels
from ..preprocess import deskew
from .common import add_data_dir, add_model, load_data


def add_commands(commands):
    """Add ``evaluate`` and ``predict`` to the subcommands ``commands``."""
    evaluate = commands.add_parser(
        "evaluate", help="test accuracy and per-class accuracy of a saved model",
        description="Score a model saved by `train --out` on the test images of the data set "
                    "it was trained on (or of the one --dataset or --data-dir names).")
    add_model(evaluate)
    add_data_dir(evaluate, model_default=True)
    evaluate.add_argument("--deskew", action="store_true",
                          help="deskew the test images before the model sees them (a model "
                               "trained with --deskew does so by itself)")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = commands.add_parser(
        "predict", help="read digits (or other classes) from images or arrays with a saved model",
        description="Predict the class of each input with a model saved by `train --out`, and "
                    "show the three most probable classes. Inputs: PNG or JPEG images of any "
                    "size, for a model of 28x28 images (made to look like MNIST: grey, ink "
                    "bright on dark, the digit scaled into 20x20 and centred by its centre of "
                    "mass in 28x28); .npy arrays and IDX files holding one image of the "
                    "model's shape or a batch, with uint8 pixels 0-255 or float pixels in "
                    "[0, 1].")
    add_model(predict)
    predict.add_argument("inputs", metavar="FILE", nargs="+",
                         help="images (.png, .jpg), .npy arrays or IDX files")
    predict.add_argument("--json", action="store_true",
                         help="print the predictions as one JSON object")
    predict.set_defaults(handler=cmd_predict)


def cmd_evaluate(args):
    model = SoftmaxRegression.load(args.model)
    dataset = load_data(args, model, pixels=True)
    X_test, y_test = Pixels(dataset.X_test), dataset.y_test
    if args.deskew and model.preprocessing != "deskew":
        X_test = deskew(X_test)
    predicted = model.predict(X_test)
    correct = predicted == y_test
    present = [label for label in model.classes_ if (y_test == label).any()]
    per_class = {str(label): float(correct[y_test == label].mean()) for label in present}
    result = {"model": args.model, "dataset": dataset.record(),
              "test_accuracy": float(correct.mean()), "n_test": int(len(y_test)),
              "per_class_accuracy": per_class}
    if args.json:
        print(json.dumps(result))
        return 0
    names = dataset.class_names or _class_names(model)
    print(f"{args.model}: test accuracy {result['test_accuracy']:.2%} on {len(y_test):,} "
          f"test images of {dataset.title}")
    print("  per class: " + "  ".join(f"{class_label(label.item(), names)}: "
                                      f"{per_class[str(label)]:.1%}" for label in present))
    return 0


def _class_names(model):
    """The class names of the data set the model file records, or None."""
    return (getattr(model, "dataset_", None) or {}).get("class_names")


# The most probable labels predict shows for each input.
TOP_K = 3


def cmd_predict(args):
    from ..images import read_inputs  # Pillow loads only when images are read
    model = SoftmaxRegression.load(args.model)
    image_shape = image_shape_of(model.n_features_in_, getattr(model, "dataset_", None))
    names = _class_names(model)

    def labelled(k):
        label = model.classes_[k].item()
        return {"label": label, "name": class_label(label, names)}

    predictions, failures = [], []
    for path in args.inputs:
        # One unreadable input must not cost the predictions of the others: it is reported
        # after them.
        try:
            pixels = read_inputs(path, model.n_features_in_, image_shape)
        except DataError as exc:
            failures.append({"input": path, "error": str(exc)})
            continue
        proba = model.predict_proba(pixels)
        for row, p in enumerate(proba):
            top = np.argsort(-p, kind="stable")[:TOP_K]
            predictions.append({
                "input": path if len(proba) == 1 else f"{path}[{row}]",
                **labelled(top[0]),
                "top": [{**labelled(k), "probability": float(p[k])} for k in top]})
    if args.json:
        print(json.dumps({"model": args.model, "predictions": predictions,
                          "errors": failures}))
    else:
        for prediction in predictions:
            top = ", ".join(f"{t['name']} {t['probability']:.1%}" for t in prediction["top"])
            print(f"{prediction['input']}: {prediction['name']}   ({top})")
    if len(failures) == 1:
        raise DataError(failures[0]["error"])
    if failures:
        raise DataError(f"{len(failures)} of {len(args.inputs)} inputs could not be read: " +
                        "; ".join(failure["error"] for failure in failures))
    return 0
