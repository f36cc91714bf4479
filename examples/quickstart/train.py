"""Train a small classifier on the iris data set and save it in tiffin's model store.

Run it with `make run`, or `python examples/quickstart/train.py` in an environment
where tiffin is installed with the sklearn extra (`pip install 'tiffin[sklearn]'`).
"""

from __future__ import annotations

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import tiffin


def main() -> None:
    features, labels = load_iris(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(
        features, labels, test_size=0.25, random_state=0, stratify=labels
    )
    clf = LogisticRegression(max_iter=1000).fit(train_x, train_y)
    accuracy = float(clf.score(test_x, test_y))

    model = tiffin.models.save(
        "iris",
        clf,
        metadata={"accuracy": accuracy, "dataset": "iris", "test_rows": len(test_y)},
        labels={"stage": "quickstart"},
    )
    print(f"Saved {model.tag} ({model.info.framework.name}, accuracy {accuracy:.3f})")

    restored = tiffin.models.get("iris:latest").load()
    first = test_x[:1]
    print(
        f"Loaded it back: predicts class {int(restored.predict(first)[0])} for {first[0].tolist()}"
    )


if __name__ == "__main__":
    main()
