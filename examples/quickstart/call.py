"""Call the running iris service: `python call.py [URL]` (default http://127.0.0.1:3000)."""

from __future__ import annotations

import sys

import tiffin


def main(url: str) -> None:
    with tiffin.Client(url) as client:
        flowers = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]
        species = client.predict(features=flowers)
        for flower, name in zip(flowers, species, strict=True):
            print(f"{flower} -> {name}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:3000")
