"""``fastlr evaluate`` and ``fastlr predict``: use a saved model on the test set or on images."""

import json

import numpy as np

from ..data import load_test_set
from ..model import SoftmaxRegression
from ..preprocess import deskew
from .common import add_data_dir, add_model


def add_commands(commands):
    """Add ``evaluate`` and ``predict`` to the subcommands ``commands``."""
    evaluate = commands.add_parser(
        "evaluate", help="test accuracy and per-class accuracy of a saved model",
        description="Score a model saved by `train --out` on the MNIST test set.")
    add_model(evaluate)
    add_data_dir(evaluate)
    evaluate.add_argument("--deskew", action="store_true",
                          help="deskew the test images before the model sees them (a model "
                               "trained with --deskew does so by itself)")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = commands.add_parser(
        "predict", help="read digits from images or arrays with a saved model",
        description="Predict the digit in each input with a model saved by `train --out`, and "
                    "show the three most probable digits. Inputs: PNG or JPEG images of any "
                    "size (made to look like MNIST: grey, ink bright on dark, the digit "
                    "scaled into 20x20 and centred by its centre of mass in 28x28); .npy "
                    "arrays and IDX files holding one 28x28 image or a batch, with uint8 "
                    "pixels 0-255 or float pixels in [0, 1].")
    add_model(predict)
    predict.add_argument("inputs", metavar="FILE", nargs="+",
                         help="images (.png, .jpg), .npy arrays or IDX files")
    predict.add_argument("--json", action="store_true",
                         help="print the predictions as one JSON object")
    predict.set_defaults(handler=cmd_predict)


def cmd_evaluate(args):
    model = SoftmaxRegression.load(args.model)
    X_test, y_test = load_test_set(args.data_dir)
    if args.deskew and model.preprocessing != "deskew":
        X_test = deskew(X_test)
    predicted = model.predict(X_test)
    correct = predicted == y_test
    per_class = {str(label): float(correct[y_test == label].mean())
                 for label in model.classes_ if (y_test == label).any()}
    result = {"model": args.model, "test_accuracy": float(correct.mean()),
              "n_test": int(len(y_test)), "per_class_accuracy": per_class}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.model}: test accuracy {result['test_accuracy']:.2%} on {len(y_test):,} "
          f"images")
    print("  per class: " + "  ".join(f"{label}: {acc:.1%}" for label, acc in per_class.items()))
    return 0


# The most probable labels predict shows for each input.
TOP_K = 3


def cmd_predict(args):
    from ..images import read_inputs  # Pillow loads only when images are read
    model = SoftmaxRegression.load(args.model)
    predictions = []
    for path in args.inputs:
        pixels = read_inputs(path, model.n_features_in_)
        proba = model.predict_proba(pixels)
        for row, p in enumerate(proba):
            top = np.argsort(-p, kind="stable")[:TOP_K]
            predictions.append({
                "input": path if len(proba) == 1 else f"{path}[{row}]",
                "label": model.classes_[top[0]].item(),
                "top": [{"label": model.classes_[k].item(), "probability": float(p[k])}
                        for k in top]})
    if args.json:
        print(json.dumps({"model": args.model, "predictions": predictions}))
        return 0
    for prediction in predictions:
        top = ", ".join(f"{t['label']} {t['probability']:.1%}" for t in prediction["top"])
        print(f"{prediction['input']}: {prediction['label']}   ({top})")
    return 0
