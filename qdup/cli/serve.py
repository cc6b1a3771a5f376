"""`qdup serve-model`: answer similarity and search requests over HTTP with the store's current version."""

from __future__ import annotations

import argparse
import logging


def cmd_serve_model(args: argparse.Namespace) -> int:
    import uvicorn

    from qdup.registry.store import ArtifactStore
    from qdup.serving.follower import ModelFollower
    from qdup.serving.http import create_app
    from qdup.serving.settings import ServeConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    cfg = ServeConfig(
        model=args.model,
        store=args.store,
        host=args.host,
        port=args.port,
        max_batch_pairs=args.max_batch_pairs,
        max_body_bytes=args.max_body_bytes,
        max_question_chars=args.max_question_chars,
        batch_wait_ms=args.batch_wait_ms,
        poll_s=args.poll_s,
    )
    follower = ModelFollower(ArtifactStore(cfg.store), cfg.model, cfg.poll_s)
    # Load before listening: a reference that cannot be served is one clear error, not a server that never gets ready.
    served = follower.load_initial()
    where = f"http://{cfg.host}:{cfg.port}/"
    print(f"serving {cfg.model} = {served.version} (threshold {served.threshold:.4f}) on {where}", flush=True)
    uvicorn.run(
        create_app(cfg, follower), host=cfg.host, port=cfg.port, log_level="info", access_log=args.access_log, loop="uvloop", http="httptools"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from qdup.serving.settings import ServeConfig

    d = ServeConfig()
    p = subparsers.add_parser("serve-model", help="serve the model over HTTP (API, docs at /docs, web page at /)")
    p.add_argument("--model", default=d.model,
                   help="alias to follow (e.g. production) or version id to pin (default: %(default)s)")
    p.add_argument("--store", help="store URL (default $QDUP_HOME/store)")
    p.add_argument("--host", default=d.host, help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=d.port, help="port (default: %(default)s)")
    p.add_argument("--max-batch-pairs", type=int, default=d.max_batch_pairs, help="pairs per request (default: %(default)s)")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="bytes per request body (default: %(default)s)")
    p.add_argument("--max-question-chars", type=int, default=d.max_question_chars,
                   help="characters per question (default: %(default)s)")
    p.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_ms,
                   help="how long a request waits for others to share a model call (default: %(default)s)")
    p.add_argument("--poll-s", type=float, default=d.poll_s, help="seconds between checks of the alias (default: %(default)s)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve_model)
