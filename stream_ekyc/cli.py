"""Command line: ``stream-ekyc score | compare | models | serve | apps create|webhook-secret | usage |
retention sweep|status``.

Every error in the input exits 2 with one line on stderr; results go to stdout as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Awaitable, Callable, Sequence

if TYPE_CHECKING:
    from .stores.records import RecordsStore


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
    s.add_argument("--id-photo", help="ID photo (JPEG or PNG): adds the face match after a live verdict")
    s.add_argument("--match-threshold", type=float, help="similarity (0-100) needed for a match (default 70)")

    c = sub.add_parser("compare", help="compare the faces in two photos (JPEG or PNG)")
    c.add_argument("photo_a")
    c.add_argument("photo_b")
    c.add_argument("--threshold", type=float, help="similarity (0-100) needed for a match (default 70)")

    m = sub.add_parser("models", help="manage the face models")
    msub = m.add_subparsers(dest="action", required=True, parser_class=_Parser)
    msub.add_parser("fetch", help="download, verify and cache YuNet and SFace")
    msub.add_parser("path", help="print where the models are cached")

    sv = sub.add_parser("serve", help="run the service (settings from STREAM_EKYC_* variables)")
    sv.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port to listen on (default 8080)")
    sv.add_argument("--demo", action="store_true", help="demo mode: a built-in app and the page at /")
    sv.add_argument("--decode-only", action="store_true",
                    help="benchmark baseline: receive and decode every frame, no analysis, no verdict")

    b = sub.add_parser("bench", help="run a benchmark of the repository's benchmarks/ folder")
    bsub = b.add_subparsers(dest="action", required=True, parser_class=_Parser)
    bsub.add_parser("load", add_help=False,
                    help="load and capacity benchmark; options: stream-ekyc bench load --help")

    a = sub.add_parser("apps", help="manage the relying parties' AppIDs and API keys")
    asub = a.add_subparsers(dest="action", required=True, parser_class=_Parser)
    ac = asub.add_parser("create", help="create an AppID; prints its API key (once) and webhook secret")
    ac.add_argument("name", help="a label for the app")
    aw = asub.add_parser("webhook-secret", help="print the secret that signs an AppID's webhooks")
    aw.add_argument("app_id", help="the AppID")

    u = sub.add_parser("usage", help="calls, results and fee of one AppID in one month (JSON)")
    u.add_argument("--app", required=True, help="the AppID")
    u.add_argument("--month", required=True, help="YYYY-MM, in UTC")

    r = sub.add_parser("retention", help="media deletion, key shredding and records purge (docs/retention.md)")
    rsub = r.add_subparsers(dest="action", required=True, parser_class=_Parser)
    rs = rsub.add_parser("sweep", help="run one retention pass now (for cron); prints a JSON report")
    rs.add_argument("--owner", help="lease owner name (default: host-pid-random)")
    rsub.add_parser("status", help="oldest media object age, objects past deadline, next sweep (JSON)")
    return p


def cmd_score(args: argparse.Namespace) -> int:
    from . import challenge as challenge_mod
    from .models import ModelError
    from .offline import VideoError, score_video

    try:
        ch = challenge_mod.load(args.challenge)
    except challenge_mod.ChallengeError as e:
        return _fail(str(e))
    id_embedding = None
    if args.id_photo is not None:
        try:
            id_embedding = _photo_face(args.id_photo, args.match_threshold).embedding
        except UsageError as e:
            return _fail(str(e))
    try:
        result = score_video(args.video, ch, keep_records=args.records, id_embedding=id_embedding,
                             match_threshold=args.match_threshold)
    except VideoError as e:
        return _fail(str(e))
    except ModelError as e:
        return _fail(str(e))
    json.dump(result, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")
    return 0


def _photo_face(path: str, threshold: float | None):
    """The face template of a photo file, checked like an ID photo at intake; UsageError otherwise."""
    from . import compare, idphoto
    from .models import ModelError

    if threshold is not None:
        try:
            compare.check_threshold(threshold)
        except ValueError as e:
            raise UsageError(str(e)) from None
    try:
        with open(path, "rb") as f:
            data = f.read(idphoto.MAX_BYTES + 1)
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return idphoto.check(data).face
    except idphoto.IdPhotoError as e:
        raise UsageError(f"{path}: {e} ({e.code})") from None
    except ModelError as e:
        raise UsageError(str(e)) from None


def cmd_compare(args: argparse.Namespace) -> int:
    from . import compare

    try:
        a = _photo_face(args.photo_a, args.threshold)
        b = _photo_face(args.photo_b, args.threshold)
    except UsageError as e:
        return _fail(str(e))
    threshold = compare.DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    json.dump(compare.match_result(a.embedding, b.embedding, threshold), sys.stdout)
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


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from aiohttp import web

    from .api.app import create_app
    from .config import ConfigError, Settings
    from .stores.media import MediaUnavailable, media_from_url
    from .stores.records import RecordsError, records_from_url
    from .stores.redact import install_log_redaction

    try:
        settings = Settings.from_env(host=args.host, port=args.port, demo=True if args.demo else None,
                                     decode_only=True if args.decode_only else None)
        records_from_url(settings.records_url)
        media_from_url(settings.media_url, settings=settings)
    except ConfigError as e:
        return _fail(str(e))
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    # before any thread of the service starts (decoders, executors, stores)
    from .heap import limit_arenas
    limit_arenas(settings.malloc_arenas)
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    print(f"stream-ekyc: serving on {settings.host}:{settings.port}; page at {settings.public_url}/s/"
          + (" (demo mode)" if settings.demo else ""), file=sys.stderr)
    try:
        # SIGINT/SIGTERM: stop accepting, let requests finish, then the cleanup contexts run
        # (in-flight live sessions get a verdict or a clean 'failed', stores close)
        web.run_app(create_app(settings), host=settings.host, port=settings.port, loop=loop,
                    shutdown_timeout=10.0, print=None)
    except OSError as e:
        return _fail(f"cannot serve on {settings.host}:{settings.port}: {e.strerror or e}")
    except (RecordsError, ConfigError, MediaUnavailable) as e:
        return _fail(str(e))
    finally:
        if not loop.is_closed():
            loop.close()
    return 0


def cmd_apps(args: argparse.Namespace) -> int:
    import time

    from .api.auth import check_app_name, create_api_app
    from .config import ConfigError, Settings
    from .stores.records import records_from_url
    from .webhooks import new_secret, secret_text

    try:
        name = check_app_name(args.name) if args.action == "create" else None
        settings = Settings.from_env()
        records = records_from_url(settings.records_url)
    except (ConfigError, ValueError) as e:
        return _fail(str(e))

    async def run(records: "RecordsStore") -> dict[str, str] | None:
        now = time.time()
        if args.action == "create":
            app_id, api_key = await create_api_app(records, name, now)
            out = {"app_id": app_id, "api_key": api_key}
        else:
            app_id = args.app_id
            if await records.get_app(app_id) is None:
                return None
            out = {"app_id": app_id}
        out["webhook_secret"] = secret_text(await records.webhook_secret(app_id, now, new_secret()))
        return out

    return _print_from_records(records, run, missing=f"no app {getattr(args, 'app_id', '')!r}")


def _print_from_records(records: "RecordsStore", fn: Callable[["RecordsStore"], Awaitable[dict | None]],
                        missing: str) -> int:
    """Open the records store, print ``fn(records)`` as one JSON line and exit 0; exit 2 with
    one line when the store fails or ``fn`` finds nothing (``missing``)."""
    import asyncio

    from .stores.records import RecordsError

    async def run() -> dict | None:
        await records.start()
        try:
            return await fn(records)
        finally:
            await records.close()

    try:
        out = asyncio.run(run())
    except RecordsError as e:
        return _fail(str(e))
    if out is None:
        return _fail(missing)
    json.dump(out, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    import asyncio

    from .config import ConfigError, Settings
    from .stores.media import MediaUnavailable, media_from_url
    from .stores.records import RecordsError, records_from_url
    from .stores.retention import Sweeper

    try:
        settings = Settings.from_env()
        records = records_from_url(settings.records_url)
        media = media_from_url(settings.media_url, records, settings=settings) if args.action == "sweep" else None
    except ConfigError as e:
        return _fail(str(e))
    owner = getattr(args, "owner", None)
    if owner is not None and (not owner.strip() or len(owner) > 64 or not owner.isprintable()):
        return _fail("--owner: one line of at most 64 printable characters")

    async def run() -> dict:
        await records.start()
        try:
            if media is not None:
                await media.start()
            try:
                sweeper = Sweeper(records, media, interval_s=settings.retention_interval_s,  # type: ignore[arg-type]
                                  owner=owner,
                                  records_retention_s=settings.records_ttl_s)
                return await (sweeper.sweep_once() if args.action == "sweep" else sweeper.status())
            finally:
                if media is not None:
                    await media.close()
        finally:
            await records.close()

    try:
        report = asyncio.run(run())
    except (RecordsError, MediaUnavailable, OSError) as e:   # records store or media backend unreachable
        return _fail(_one_line(e))
    json.dump(report, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")
    return 0


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:300]


def cmd_usage(args: argparse.Namespace) -> int:
    import re

    from .config import ConfigError, Settings
    from .pricing import parse_month, usage_report
    from .stores.records import records_from_url

    try:
        year, month = parse_month(args.month)
    except ValueError as e:
        return _fail(f"--month: {e}")
    app_id = args.app.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", app_id):
        return _fail("--app: an AppID of letters, digits, '_', '.', '-' (at most 64)")
    try:
        settings = Settings.from_env()
        records = records_from_url(settings.records_url)
    except ConfigError as e:
        return _fail(str(e))
    period = f"{year:04d}-{month:02d}"

    async def report(records: "RecordsStore") -> dict | None:
        if await records.get_app(app_id) is None:
            return None
        return usage_report(app_id, period, await records.usage(app_id, period))

    return _print_from_records(records, report, missing=f"--app: no app {app_id!r} in the records store")


BENCHMARKS = {"load": "load.py"}


def cmd_bench(name: str, rest: Sequence[str]) -> int:
    """Run ``benchmarks/<name>.py`` of the repository (not part of the installed package)
    with the remaining arguments, in this interpreter."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / BENCHMARKS[name]
    if not script.is_file():
        return _fail(f"{script} not found: run from a checkout of the repository (benchmarks/ is not installed)")
    try:
        return subprocess.call([sys.executable, str(script), *rest])
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] == "bench" and argv[1] in BENCHMARKS:
        # the benchmark parses its own options (stream-ekyc bench load --help)
        return cmd_bench(argv[1], argv[2:])
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        return _fail(str(e))
    handler = {"score": cmd_score, "compare": cmd_compare, "models": cmd_models, "serve": cmd_serve,
               "apps": cmd_apps, "usage": cmd_usage, "retention": cmd_retention}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
