"""`kubectl modelrelease …`: arguments, and one function per command.

Exit codes: 0 done; 1 a failure the user can act on (not found, an ignored request, a release that
rolled back for `status`); 2 bad arguments, or for `status` a timeout or a pause.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import yaml
from rich.console import Console

from modelrelease.api.labels import ANNOTATION_PAUSED, ANNOTATION_REQUESTS, ANNOTATION_UNDO_TO
from modelrelease.api.status import TERMINAL_PHASES
from modelrelease.kubectl import render
from modelrelease.kubectl.client import Object, PluginError, ReleaseClient

EXIT_OK, EXIT_FAILED, EXIT_UNDECIDED = 0, 1, 2


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--kubeconfig", default=default, help="path to the kubeconfig (default: $KUBECONFIG)")
    parser.add_argument("--context", default=default, help="the kubeconfig context to use")
    parser.add_argument("-n", "--namespace", default=default, help="the namespace (default: the context's)")
    parser.add_argument("-o", "--output", choices=["json", "yaml"], default=default,
                        help="print data for scripts instead of tables")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl modelrelease",
                                     description="Watch and drive ModelReleases (modelrelease.io/v1alpha1).")
    _common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str, named: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_)
        _common(sub, suppress=True)
        if named:
            sub.add_argument("name", help="the ModelRelease")
        return sub

    listing = command("list", "list the releases with their phase, stage and versions", named=False)
    listing.add_argument("-A", "--all-namespaces", action="store_true")
    get = command("get", "the release as a tree: serving, stages, gates, analysis, events")
    get.add_argument("-w", "--watch", action="store_true", help="redraw on every change; end when it ends")
    for name, help_ in (("promote", "finish the current step now (--full: promote the canary to stable)"),
                        ("abort", "withdraw the canary: the stable takes all replicas"),
                        ("retry", "start the current stage again after a rollback, or resume an analysis pause"),
                        ("undo", "make a kept version stable again (default: the one before the stable)")):
        sub = command(name, help_)
        if name == "promote":
            sub.add_argument("--full", action="store_true", help="skip the remaining steps and stages")
        if name == "undo":
            sub.add_argument("--to", metavar="VERSION", help="a version name or id from `history`")
        sub.add_argument("--wait", action="store_true", help="wait until the operator has handled the request")
        sub.add_argument("--timeout", type=float, default=120.0, help="seconds --wait waits (default 120)")
    command("pause", "hold the release where it is (as spec.paused, without a spec change)")
    command("resume", "release a hold made by `pause`; also resumes an analysis pause")
    command("history", "every kept version with its lineage, and which one is stable")
    status = command("status", "wait for the release to end: exit 0 Released, 1 RolledBack/Failed/Invalid, "
                               "2 timeout or paused")
    status.add_argument("--timeout", default="10m", help="how long to wait, e.g. 90s, 10m (default 10m)")
    command("explain", "why the release rolled back, paused or is invalid, in words")
    return parser


def request_id() -> str:
    return f"kubectl-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"


class Plugin:
    def __init__(self, args: argparse.Namespace, client: ReleaseClient, console: Console) -> None:
        self.args, self.client, self.console = args, client, console

    def emit(self, data: Any, human: Callable[[], Any]) -> None:
        if self.args.output == "json":
            print(json.dumps(data, indent=2, sort_keys=True, default=str))
        elif self.args.output == "yaml":
            print(yaml.safe_dump(data, sort_keys=False), end="")
        else:
            self.console.print(human())

    # Reading.
    def cmd_list(self) -> int:
        items = self.client.list_releases(self.args.all_namespaces)
        now = render.now_utc()
        where = "any namespace" if self.args.all_namespaces else self.client.namespace
        self.emit({"items": items}, lambda: render.release_table(items, self.args.all_namespaces, now)
                  if items else f"No ModelReleases in {where}.")
        return EXIT_OK

    def _tree(self, obj: Object) -> Any:
        name = obj["metadata"]["name"]
        return render.release_tree(obj, self.client.replicas(name), self.client.events(name), render.now_utc())

    def cmd_get(self) -> int:
        if not self.args.watch:
            obj = self.client.get(self.args.name)
            self.emit(obj, lambda: self._tree(obj))
            return EXIT_OK
        return self._watch()

    def _watch(self) -> int:
        last = None
        while True:
            for obj in self.client.watch(self.args.name, timeout_seconds=300):
                shown = json.dumps(obj.get("status"), sort_keys=True), obj["metadata"].get("generation")
                if shown != last:
                    last = shown
                    self.emit(obj, lambda o=obj: self._tree(o))  # type: ignore[misc]
                    if not self.console.is_terminal and self.args.output is None:
                        self.console.print()
                if _ended(obj):
                    return EXIT_OK

    def cmd_history(self) -> int:
        obj = self.client.get(self.args.name)
        history = (obj.get("status") or {}).get("history") or []
        self.emit(history, lambda: render.history_table(obj) if history else "No version has been released yet.")
        return EXIT_OK

    def cmd_explain(self) -> int:
        obj = self.client.get(self.args.name)
        status = obj.get("status") or {}
        data = {k: status.get(k) for k in ("phase", "message", "failure", "pauseReason", "analysis")}
        self.emit(data, lambda: render.explanation(obj))
        return EXIT_OK

    def cmd_status(self) -> int:
        from modelrelease.api.base import parse_duration

        try:
            deadline = time.monotonic() + parse_duration(self.args.timeout).total_seconds()
        except ValueError as exc:
            raise PluginError(f"--timeout: {exc}") from None
        obj = self.client.get(self.args.name)
        while not _decided(obj) and time.monotonic() < deadline:
            remaining = max(1, int(deadline - time.monotonic()))
            for obj in self.client.watch(self.args.name, timeout_seconds=min(remaining, 60)):
                if _decided(obj) or time.monotonic() >= deadline:
                    break
        status = obj.get("status") or {}
        phase = status.get("phase", "Pending")
        code = _exit_code(obj) if _decided(obj) else EXIT_UNDECIDED
        outcome = "timed out" if not _decided(obj) else phase
        data = {"name": obj["metadata"]["name"], "phase": phase, "message": status.get("message", ""),
                "exitCode": code}
        self.emit(data, lambda: f"{obj['metadata']['name']}: {outcome} ({status.get('message', '')})")
        return code

    # Asking.
    def _request(self, action: str, extra: dict[str, str | None] | None = None) -> int:
        name, ident = self.args.name, request_id()
        self.client.annotate(name, {ANNOTATION_REQUESTS[action]: ident, **(extra or {})})
        label = action.replace("_", "-")
        data: dict[str, Any] = {"action": label, "requestId": ident, "namespace": self.client.namespace,
                                "name": name}
        if not getattr(self.args, "wait", False):
            self.emit(data, lambda: f"requested {label} of {self.client.namespace}/{name} (request {ident})")
            return EXIT_OK
        handled = self._wait_handled(ident)
        data.update(outcome=handled.get("outcome"), message=handled.get("message", ""))
        self.emit(data, lambda: f"{label} of {self.client.namespace}/{name}: {handled.get('outcome', '').lower()}"
                  + (f": {handled['message']}" if handled.get("message") else ""))
        return EXIT_OK if handled.get("outcome") == "Handled" else EXIT_FAILED

    def _wait_handled(self, ident: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            records = (self.client.get(self.args.name).get("status") or {}).get("handledRequests") or []
            found = next((r for r in records if r.get("id") == ident), None)
            if found:
                return found
            time.sleep(0.5)
        raise PluginError(f"the operator did not record request {ident} within {self.args.timeout:g}s; "
                          "is it running? (`kubectl get pods` in its namespace)")

    def cmd_promote(self) -> int:
        return self._request("promote_full" if self.args.full else "promote")

    def cmd_abort(self) -> int:
        return self._request("abort")

    def cmd_retry(self) -> int:
        return self._request("retry")

    def cmd_undo(self) -> int:
        target = self.args.to or _previous_version(self.client.get(self.args.name))
        return self._request("undo", {ANNOTATION_UNDO_TO: target})

    def cmd_pause(self) -> int:
        self.client.annotate(self.args.name, {ANNOTATION_PAUSED: "true"})
        self.emit({"action": "pause", "name": self.args.name}, lambda: f"paused {self.args.name} "
                  "(the annotation modelrelease.io/paused holds it; `resume` releases it)")
        return EXIT_OK

    def cmd_resume(self) -> int:
        obj = self.client.get(self.args.name)
        status, spec = obj.get("status") or {}, obj.get("spec") or {}
        self.client.annotate(self.args.name, {ANNOTATION_PAUSED: "false"})
        notes = []
        if status.get("phase") == "Paused" and status.get("pauseReason"):
            ident = request_id()
            self.client.annotate(self.args.name, {ANNOTATION_REQUESTS["retry"]: ident})
            notes.append(f"analysis pause ({status['pauseReason']}): asked to retry (request {ident})")
        if spec.get("paused"):
            notes.append("spec.paused is true in the spec: it stays paused until that is cleared where the spec "
                         "lives (Git)")
        self.emit({"action": "resume", "name": self.args.name, "notes": notes},
                  lambda: "\n".join([f"resumed {self.args.name}", *notes]))
        return EXIT_OK


def _ended(obj: Object) -> bool:
    status = obj.get("status") or {}
    current = status.get("observedGeneration") == obj["metadata"].get("generation")
    return current and (status.get("phase") in TERMINAL_PHASES or status.get("phase") == "Invalid")


def _decided(obj: Object) -> bool:
    return _ended(obj) or (obj.get("status") or {}).get("phase") == "Paused"


def _exit_code(obj: Object) -> int:
    phase = (obj.get("status") or {}).get("phase")
    if phase == "Released":
        return EXIT_OK
    return EXIT_UNDECIDED if phase == "Paused" else EXIT_FAILED


def _previous_version(obj: Object) -> str:
    status = render.status_of(obj)
    stable_id = status.stable.id if status.stable else None
    earlier = [v for v in reversed(status.history) if v.id != stable_id]
    if not earlier:
        raise PluginError("no earlier version is kept to go back to; see `kubectl modelrelease history`")
    return earlier[0].name


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(highlight=False, soft_wrap=False)
    errors = Console(stderr=True, highlight=False)
    try:
        client = ReleaseClient(args.kubeconfig, args.context, args.namespace)
        return int(getattr(Plugin(args, client, console), f"cmd_{args.command}")())
    except PluginError as exc:
        errors.print(f"error: {exc}", style="red", markup=False)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def entrypoint() -> None:
    sys.exit(main())
