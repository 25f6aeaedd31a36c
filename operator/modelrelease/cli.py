"""`modelrelease ...`: run the operator; more subcommands arrive with the embedded default."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelrelease", description="Staged training and canary releases of ML models."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator against the current kubeconfig or in-cluster config")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")
    run.add_argument("--peering", metavar="NAME", help="coordinate with other replicas through this peering object "
                     "(default: standalone, one operator replica)")
    run.add_argument("--liveness", metavar="URL", default=None,
                     help="serve a liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    run.add_argument("--leader-elect", action="store_true",
                     help="run as one of several replicas: only the holder of a coordination.k8s.io Lease acts")
    run.add_argument("--leader-election-namespace", default=None,
                     help="namespace of the Lease (default: $POD_NAMESPACE, else default)")
    run.add_argument("--leader-election-id", default="model-release-operator", help="name of the Lease")
    run.add_argument("--leader-election-lease-duration", type=float, default=15.0, metavar="SECONDS",
                     help="how long a standby waits for a silent leader before it takes over (default 15)")
    run.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                     help="serve the operator's Prometheus metrics on this port at /metrics (default: off)")
    run.add_argument("--metrics-address", default="0.0.0.0", help="address for --metrics-port (default 0.0.0.0)")
    run.add_argument("--log-format", choices=["plain", "json"], default="plain")
    run.add_argument("-v", "--verbose", action="store_true")
    commands.add_parser("crd", help="print the CustomResourceDefinition as YAML")
    commands.add_parser("argocd-cm", help="print the argocd-cm entries: the ModelRelease health check and actions")
    commands.add_parser("local", help="the embedded default: local up | down | demo (see `modelrelease local -h`)",
                        add_help=False)
    commands.add_parser("backtest", help="replay a release's analysis against Prometheus history "
                        "(see `modelrelease backtest -h`)", add_help=False)
    return parser


def _run(args: argparse.Namespace) -> int:
    import kopf

    import modelrelease.handlers  # noqa: F401  (registers the handlers)
    from modelrelease import metrics

    if args.metrics_port is not None:
        metrics.serve(args.metrics_port, args.metrics_address)
    if args.leader_elect:
        import os
        import socket
        import uuid

        from modelrelease.handlers import use_leader_election
        from modelrelease.runtime.leadership import LeaseSettings

        identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        namespace = args.leader_election_namespace or os.environ.get("POD_NAMESPACE") or "default"
        use_leader_election(LeaseSettings.for_duration(namespace, args.leader_election_id, identity,
                                                       args.leader_election_lease_duration))

    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    kopf.run(
        standalone=args.peering is None,
        peering_name=args.peering,
        namespaces=args.namespace or (),
        clusterwide=not args.namespace,
        liveness_endpoint=args.liveness,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["local"]:
        # The embedded default has its own parser (and heavier imports); hand it the rest.
        from modelrelease_local.__main__ import main as local_main

        return local_main(argv[1:])
    if argv[:1] == ["backtest"]:
        # Its own parser, and rich and matplotlib, which the operator itself never loads.
        from modelrelease.backtest.main import main as backtest_main

        return backtest_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "argocd-cm":
        from modelrelease.argocd import argocd_cm, to_yaml

        sys.stdout.write(to_yaml(argocd_cm()))
    if args.command == "crd":
        import yaml

        from modelrelease.api.crd import build_crd

        yaml.safe_dump(build_crd(), sys.stdout, sort_keys=False, width=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
