"""`qdup serve-model`: answer similarity and search requests over HTTP with the store's current version."""

from __future__ import annotations

import argparse
import logging
import os

from qdup.cli.common import STORE_HELP, add_command, add_model_option, bind_port, open_store, port, require_extra, resolve_version, settle_model

FEEDBACK_TOKEN_ENV = "QDUP_FEEDBACK_TOKEN"


def cmd_serve_model(args: argparse.Namespace) -> int:
    settle_model(args)
    require_extra("serve", "serve-model")
    # The reference is resolved and the port bound before the model loads: a wrong name or a busy port answers at once.
    store = open_store(args)
    resolve_version(store, args.model)
    sock = bind_port(args.host, args.port, "serve-model")
    import uvicorn

    from qdup.serving.follower import ModelFollower
    from qdup.serving.http import create_app
    from qdup.serving.settings import ServeConfig
    from qdup.serving.threads import apply_serving_threads

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    # faiss logs at INFO each CPU variant it tries to load (with the ModuleNotFoundError of the missing ones).
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
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
        probe_attempts=args.probe_attempts,
        encoding_cache_mb=args.encoding_cache_mb,
        inference_threads=args.inference_threads,
        tf_intra_op_threads=args.tf_intra_op_threads,
        tf_inter_op_threads=args.tf_inter_op_threads,
        faiss_threads=args.faiss_threads,
        blas_threads=args.blas_threads,
        feedback_token=args.feedback_token or os.environ.get(FEEDBACK_TOKEN_ENV) or None,
        feedback_public_reads=args.feedback_public_reads,
        feedback_rate_per_s=args.feedback_rate,
        feedback_burst=args.feedback_burst,
    )
    # Serving's pools, before the first model runs (TensorFlow fixes its pools then).
    threads = apply_serving_threads(cfg)
    logging.getLogger("qdup.serving").info("thread pools: %s", threads)
    follower = ModelFollower(store, cfg.model, cfg.poll_s, probe_attempts=cfg.probe_attempts)
    # Load before listening: a reference that cannot be served is one clear error, not a server that never gets ready.
    served = follower.load_initial()
    where = f"http://{cfg.host}:{cfg.port}/"
    print(f"serving {cfg.model} = {served.version} (threshold {served.threshold:.4f}) on {where}", flush=True)
    server = uvicorn.Server(uvicorn.Config(
        create_app(cfg, follower), host=cfg.host, port=cfg.port, log_level="info", access_log=args.access_log, loop="uvloop", http="httptools"
    ))
    server.run(sockets=[sock])
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from qdup.serving.settings import ServeConfig

    d = ServeConfig()
    p = add_command(subparsers, "serve-model", "serve the model over HTTP (API, docs at /docs, web page at /)", [
        "qdup serve-model                          # follows production on http://127.0.0.1:8000/",
        "qdup serve-model -m 20261123T010203456Z-a1b2c3 --port 8080",
    ], cmd_serve_model)
    add_model_option(p, default=d.model)
    p.add_argument("--store", help=STORE_HELP)
    p.add_argument("--host", default=d.host, help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=port, default=d.port, help="port, 1-65535 (default: %(default)s)")
    p.add_argument("--max-batch-pairs", type=int, default=d.max_batch_pairs, help="pairs per request (default: %(default)s)")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="bytes per request body (default: %(default)s)")
    p.add_argument("--max-question-chars", type=int, default=d.max_question_chars,
                   help="characters per question (default: %(default)s)")
    p.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_ms,
                   help="how long a request waits for others to share a model call (default: %(default)s)")
    p.add_argument("--poll-s", type=float, default=d.poll_s, help="seconds between checks of the alias (default: %(default)s)")
    p.add_argument("--probe-attempts", type=int, default=d.probe_attempts,
                   help="loads of a version whose probe pairs fail before it is refused (default: %(default)s)")
    p.add_argument("--encoding-cache-mb", type=float, default=d.encoding_cache_mb,
                   help="memory for question encodings kept across requests, per version, LRU; 0 disables (default: %(default)s)")
    p.add_argument("--inference-threads", type=int, default=d.inference_threads,
                   help="ONNX Runtime threads of the encoder (default: %(default)s)")
    p.add_argument("--tf-intra-op-threads", type=int, default=d.tf_intra_op_threads,
                   help="threads one TensorFlow op may use, for a version exported without the fast form (default: %(default)s)")
    p.add_argument("--tf-inter-op-threads", type=int, default=d.tf_inter_op_threads,
                   help="TensorFlow ops run at once (default: %(default)s)")
    p.add_argument("--faiss-threads", type=int, default=d.faiss_threads, help="OpenMP threads of a faiss search (default: %(default)s)")
    p.add_argument("--blas-threads", type=int, default=d.blas_threads, help="BLAS threads (default: %(default)s)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--feedback-token", help=f"every POST /v1/feedback needs `Authorization: Bearer TOKEN` (default: ${FEEDBACK_TOKEN_ENV}; "
                                            "unset: writes need no token)")
    p.add_argument("--feedback-public-reads", action="store_true", help="feedback reads (/v1/feedback/stats) need no token")
    p.add_argument("--feedback-rate", type=float, default=d.feedback_rate_per_s,
                   help="feedback writes a second one client address may make on average; 0: no limit (default: %(default)s)")
    p.add_argument("--feedback-burst", type=int, default=d.feedback_burst,
                   help="feedback writes one client address may make at once (default: %(default)s)")
