"""Command line: ``stream-ekyc score | models``.

Every error in the input exits 2 with one line on stderr; results go to stdout as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


def _fail(msg: str) -> int:
    print(f"stream-ekyc: error: {msg}", file=sys.stderr)
    return 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage otherwise)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="stream-ekyc", description="Self-hostable reflective liveness for eKYC.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("score", help="score a recorded session video against its challenge file")
    s.add_argument("video", help="WebM (VP8/VP9) or MP4 (H.264) recording")
    s.add_argument("--challenge", required=True, help="challenge JSON file")
    s.add_argument("--records", action="store_true", help="include the per-frame records")

    m = sub.add_parser("models", help="manage the face models")
    msub = m.add_subparsers(dest="action", required=True, parser_class=_Parser)
    msub.add_parser("fetch", help="download, verify and cache YuNet and SFace")
    msub.add_parser("path", help="print where the models are cached")
    return p


def cmd_score(args: argparse.Namespace) -> int:
    from . import challenge as challenge_mod
    from .models import ModelError
    from .offline import VideoError, score_video

    try:
        ch = challenge_mod.load(args.challenge)
    except challenge_mod.ChallengeError as e:
        return _fail(str(e))
    try:
        result = score_video(args.video, ch, keep_records=args.records)
    except VideoError as e:
        return _fail(str(e))
    except ModelError as e:
        return _fail(str(e))
    json.dump(result, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from . import models

    if args.action == "path":
        print(models.cache_dir())
        return 0
    try:
        paths = models.fetch()
    except models.ModelError as e:
        return _fail(str(e))
    json.dump({n: {"path": str(p), "sha256": models.MODELS[n].sha256, "licence": models.MODELS[n].licence}
               for n, p in paths.items()}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        return _fail(str(e))
    handler = {"score": cmd_score, "models": cmd_models}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
