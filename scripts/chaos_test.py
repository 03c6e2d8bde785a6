"""Kill replicas during a load run and check that every request is answered and the service heals.

    .venv/bin/python scripts/chaos_test.py                       # about 2-3 minutes on 2 cores
    .venv/bin/python scripts/chaos_test.py --requests 800 --concurrency 8 --interval 6
    .venv/bin/python scripts/chaos_test.py --rate-limit            # the concurrency cap as well

Starts its own local Ray cluster (no dashboard, token auth off, HTTP on 127.0.0.1 only) and deploys
``configs/offline.yaml``'s application with one change: the segmenter is wrapped so that its
warm-up fails while a fault budget remains (``tests/serve_app/fakes.py``). While the load test's
closed-loop clients (``scripts/load_test.py``) send uploads, it

1. kills (``ray.kill``) one replica of each deployment in turn: Preprocess, Inference,
   Postprocess, Ingress, Telemetry, found in the GCS actor table by class name
   ``ServeReplica:<app>:<Deployment>``;
2. arms one warm-up failure and kills the Inference replica again, so its replacement raises during
   warm-up and Serve has to start another;
3. with ``--rate-limit``: turns rate limiting on with a concurrency cap of one more than the
   clients (the recovery probe's slot; no rate rule binds), and kills the RateLimiter last. The
   429s after the Ingress kill are its clients' slots held until their leases expire.

and after each fault waits (at most ``--recovery-timeout`` s) until the deployment has as many live
replicas as before, ``/ready`` answers 200 and a probe upload succeeds. Every request must get an
answer; the ones in flight may fail, cleanly (5xx with Retry-After) or not (Serve's proxy answers a
plain 500 when the Ingress replica itself dies mid-request). The last line is
``requests=N ok=… clean_5xx=… unclean=… lost=… faults=… recovered=… max_recovery_s=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from load_test import Outcome, default_upload, run_load  # noqa: E402

from serve_app import API_PREFIX  # noqa: E402
from tests.serve_app.fakes import WARM_UP_FAULTS_ENV  # noqa: E402

APP = "birefnet"
KILL_ORDER = ("Preprocess", "Inference", "Postprocess", "Ingress", "Telemetry")
FAULT_FACTORY = "tests.serve_app.fakes:build_segmenter_with_warm_up_faults"


@dataclass(frozen=True)
class Recovery:
    fault: str
    killed: str
    at: float  # time.monotonic() of the kill
    seconds: float | None  # None: not recovered within the timeout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chaos_config(port: int, fault_budget: Path, concurrency_cap: int | None = None) -> dict[str, Any]:
    """``configs/offline.yaml`` on ``port`` with the warm-up fault wrapper around the segmenter and,
    given ``concurrency_cap``, rate limiting with that cap per client and no binding rate rule."""
    config = yaml.safe_load((ROOT / "configs" / "offline.yaml").read_text())
    config["http_options"]["port"] = port
    config["logging_config"] = {"log_level": "WARNING", "enable_access_log": False}
    app = config["applications"][0]
    app["args"]["model"]["segmenter_factory"] = FAULT_FACTORY
    app["args"]["inference"]["report_interval_s"] = 1
    app["runtime_env"] = {"env_vars": {WARM_UP_FAULTS_ENV: str(fault_budget)}}
    if concurrency_cap is not None:
        app["args"]["rate_limit"] = {
            "enabled": True,
            "tiers": {"free": [{"limit": 1_000_000, "period_s": 60}, {"concurrent": concurrency_cap}]},
        }
        app["deployments"].append({"name": "RateLimiter", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.05}})
    return dict(config)


def alive_replicas(deployment: str) -> list[str]:
    """Actor names of the live replicas of ``deployment`` (GCS actor table; no dashboard needed)."""
    from ray._private.state import actors

    prefix = f"ServeReplica:{APP}:{deployment}"
    return sorted(
        actor["Name"]
        for actor in actors().values()
        if actor["State"] == "ALIVE" and actor["ActorClassName"] == prefix and actor["Name"]
    )


def kill_one(deployment: str) -> str:
    import ray

    names = alive_replicas(deployment)
    if not names:
        raise RuntimeError(f"no live replica of {deployment}")
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
    return names[0]


def healthy(base: str, upload: bytes) -> bool:
    try:
        if requests.get(f"{base}{API_PREFIX}/ready", timeout=5).status_code != 200:
            return False
        files = {"image": ("probe.jpg", upload, "image/jpeg")}
        return requests.post(f"{base}{API_PREFIX}/remove", files=files, timeout=30).status_code == 200
    except requests.RequestException:
        return False


def wait_recovered(base: str, upload: bytes, deployment: str, replicas: int, timeout_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if len(alive_replicas(deployment)) >= replicas and healthy(base, upload):
            return time.monotonic() - started
        time.sleep(0.5)
    return None


def inject_faults(
    base: str,
    upload: bytes,
    budget: Path,
    interval_s: float,
    timeout_s: float,
    log: logging.Logger,
    kill_rate_limiter: bool = False,
) -> list[Recovery]:
    recoveries = []
    faults = [(f"kill {name}", name, 0) for name in KILL_ORDER] + [("warm-up failure", "Inference", 1)]
    if kill_rate_limiter:
        faults.append(("kill RateLimiter", "RateLimiter", 0))
    for fault, deployment, warm_up_failures in faults:
        time.sleep(interval_s)
        budget.write_text(str(warm_up_failures))
        replicas = len(alive_replicas(deployment))
        killed = kill_one(deployment)
        at = time.monotonic()
        log.info("%s: killed %s (%d live before)", fault, killed, replicas)
        seconds = wait_recovered(base, upload, deployment, replicas, timeout_s)
        if warm_up_failures and budget.read_text().strip() != "0":
            log.warning("%s: the armed warm-up failure did not fire", fault)
            fault += " (did not fire)"
        log.info("%s: %s", fault, f"recovered in {seconds:.1f}s" if seconds is not None else "NOT recovered")
        recoveries.append(Recovery(fault, killed, at, seconds))
    return recoveries


def classify(outcome: Outcome) -> str:
    if outcome.kind == "lost":
        return "lost"
    if outcome.kind in ("ok", "rejected"):
        return "ok" if outcome.kind == "ok" else "clean_5xx"
    return "unclean"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000, help="upper bound; the run ends after the faults")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--interval", type=float, default=4.0, help="seconds of load between faults")
    parser.add_argument("--recovery-timeout", type=float, default=90.0)
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds per request before it counts as lost")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument(
        "--rate-limit", action="store_true", help="cap each client at --concurrency + 1 open requests; kill the limiter"
    )
    args = parser.parse_args(argv)
    cap = args.concurrency + 1 if args.rate_limit else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    log = logging.getLogger("chaos")

    # Token auth would write ~/.ray/auth_token; this cluster is in-process and bound to 127.0.0.1.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    upload = default_upload()
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        budget = Path(scratch) / "warm_up_faults"
        budget.write_text("0")
        ray.init(include_dashboard=False, log_to_driver=False, namespace="serve", logging_level=logging.WARNING)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 60})
            config = ServeDeploySchema.model_validate(chaos_config(port, budget, cap))
            client = _get_global_client()
            if client is None:
                raise RuntimeError("Serve did not start")
            client.deploy_apps(config, _blocking=False)  # what `serve run <config>` does
            started = time.monotonic()
            if wait_recovered(base, upload, "Inference", 1, 180) is None:
                log.error("the service did not become ready")
                return 2
            log.info("ready after %.1fs; starting load (%d clients)", time.monotonic() - started, args.concurrency)

            stop = threading.Event()
            result: dict[str, Any] = {}

            def load() -> None:
                result["outcomes"], result["wall_s"] = asyncio.run(
                    run_load(
                        base, upload, args.requests, args.concurrency, args.timeout, args.max_seconds, {}, False, stop
                    )
                )

            thread = threading.Thread(target=load, name="load")
            thread.start()
            recoveries = inject_faults(
                base, upload, budget, args.interval, args.recovery_timeout, log, kill_rate_limiter=cap is not None
            )
            time.sleep(args.interval)
            stop.set()  # no new requests; the ones in flight finish
            thread.join()
        finally:
            serve.shutdown()
            ray.shutdown()

    outcomes: list[Outcome] = result["outcomes"]
    counts = Counter(classify(outcome) for outcome in outcomes)
    statuses = Counter(str(outcome.status) for outcome in outcomes)
    unclean = Counter(outcome.problem for outcome in outcomes if classify(outcome) == "unclean")
    print(
        f"load: {len(outcomes)} requests in {result['wall_s']:.1f}s, statuses "
        + " ".join(f"{status}={count}" for status, count in sorted(statuses.items()))
    )
    if unclean:
        print("unclean answers: " + "; ".join(f"{problem} x{count}" for problem, count in unclean.items()))
    for index, recovery in enumerate(recoveries):
        seconds = f"{recovery.seconds:.1f}s" if recovery.seconds is not None else "not recovered"
        until = recoveries[index + 1].at if index + 1 < len(recoveries) else float("inf")
        window = [o for o in outcomes if recovery.at <= o.finished_at < until and o.kind != "ok"]
        failed = Counter(
            f"{outcome.status} {outcome.error_code}{'' if classify(outcome) == 'clean_5xx' else ' (unclean)'}"
            for outcome in window
        )
        last = f" (the last {max(o.finished_at for o in window) - recovery.at:.1f}s after the fault)" if window else ""
        print(
            f"{recovery.fault:18s} {recovery.killed:46s} healthy again after {seconds:>6s}; "
            f"failed answers until the next fault: {dict(failed) or 'none'}{last}"
        )
    recovered = [r.seconds for r in recoveries if r.seconds is not None]
    all_recovered = len(recovered) == len(recoveries)
    print(
        f"requests={len(outcomes)} ok={counts['ok']} clean_5xx={counts['clean_5xx']} unclean={counts['unclean']} "
        f"lost={counts['lost']} faults={len(recoveries)} recovered={len(recovered)} "
        f"max_recovery_s={max(recovered, default=0.0):.1f}"
    )
    return 0 if counts["lost"] == 0 and all_recovered else 1


if __name__ == "__main__":
    raise SystemExit(main())
