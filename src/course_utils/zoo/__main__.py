"""Train the zoo ahead of use, list it, or print a card.

    python -m course_utils.zoo train --all          # every model of zoo.ZOO, one after the other
    python -m course_utils.zoo train bert-course    # named models
    python -m course_utils.zoo list                 # name, cache key, trained or not
    python -m course_utils.zoo card gpt2-course     # the card (JSON), training it if needed

Models are trained into the cache (``COURSE_CACHE``) exactly as on first use in a chapter; one
already trained is not trained again. Set ``OMP_NUM_THREADS`` to choose torch's threads.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from . import ZOO, card, key, path
from .cache import model_dir, verify


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.zoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train models into the cache (skipping those already there)")
    train.add_argument("names", nargs="*", metavar="NAME", help=f"zoo models: {', '.join(ZOO)}")
    train.add_argument("--all", action="store_true", help="every model of the zoo")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_parser("list", help="each model's cache key and whether it is trained")
    show = sub.add_parser("card", help="print a model's card (JSON)")
    show.add_argument("name", metavar="NAME")
    args = parser.parse_args(argv)

    names = list(ZOO) if args.command == "train" and args.all else getattr(args, "names", [])
    if args.command == "card":
        names = [args.name]
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        parser.error(f"no zoo model {', '.join(map(repr, unknown))}; the zoo has: {', '.join(ZOO)}")
    if args.command == "train":
        if not names:
            parser.error("name the models to train, or give --all")
        for name in names:
            t0 = time.perf_counter()
            folder = path(name, progress=not args.quiet)
            print(f"{name}: {folder} ({time.perf_counter() - t0:.0f} s)", flush=True)
    elif args.command == "list":
        for name in ZOO:
            k = key(name)
            problem = verify(model_dir(name, k))
            print(f"{name}\t{k}\t{problem or 'trained'}")
    else:
        print(json.dumps(card(names[0]), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
