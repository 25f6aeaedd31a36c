"""A thousand generated ModelReleases, most of them broken, through the API against the real operator.

Each spec is a valid one bent by a seeded mutator (the same thousand on every run). Whatever it is, the
outcome is one of three: the API refuses it (422 naming a field under spec, or 400 for an unknown field
under fieldValidation=Strict) and stores nothing; or it is stored and the operator marks it Invalid with
one InvalidSpec condition and one InvalidSpec Event, creating nothing of its own; or it is valid and the
operator takes it on. The operator survives all of it, and no stored release is left without a phase.
"""

from __future__ import annotations

import collections
import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kubernetes
import pytest

from modelrelease.api import InvalidSpecError, parse_spec
from modelrelease.api.cel_rules import RULES
from modelrelease.api.labels import LABEL_RELEASE
from tests.operator.conftest import GROUP, PLURAL, VERSION, WAIT, Harness, release_spec
from tests.waiting import wait_for

SEED = 20260101
COUNT = 1000
BATCH = 125
Spec = Any  # a mutated spec may be anything JSON can hold
Path = tuple[str | int, ...]

# Values of every JSON type (and some Python ints past int64), for "wrong type" and "null" mutations.
ODD_VALUES: tuple[Any, ...] = ("x", "", 7, -3, 2.5, 0, True, False, None, [], {}, [1, "a", None], {"k": "v"},
                               2**63, -(2**64), 10**30, 1e308, -0.0, "1", "true", "null", [[[[[]]]]])
OUT_OF_RANGE: tuple[Any, ...] = (-1, 0, 101, 1001, 65536, 10**9, 2**63, 1e308, -1e-9, 0.5, 10**30, -(2**63))
UNKNOWN_KEYS = ("foo", "Weight", "replicas ", "spec", "ünïcode", "$ref", "", "x-kubernetes-foo", "metadata")
DURATIONS = ("5x", "-1s", "1d", "", "0s", "500ms", "1h1", "1.5h", "∞", "1e3s", " 1s", "1s ", "99999999999999h",
             "1m30s", "2h", "0", "1", "s", "1ss", "+1s", "1w", "1µs", "3.", "NaN", "1e400h")
QUERIES = (
    'x{a="{{ nope }}"}', "rate(x[{{ track }}])", 'x{track="{{ interval }}"}', "x{track={{ track }}}",
    'x{track="{{ track }}"} or vector(1) #', 'x"} or vector(1) #', "{{", "}}", "{{ track", "{{}}", "",
    "sum(rate(x[{{ interval }}]))", 'up{job="{{ release }}",ns="{{ namespace }}",m="{{ model }}"}',
    'x{v="{{ version }}"} / on() y', 'x{v="{{version}}"}', "{{ interval }} {{ interval }}",
    'x{a="\\"{{ track }}"}', "名前{track=\"{{ track }}\"}", "x\x00y", "q" * 70_000, "{{ " * 200,
)
STRANGE_STRINGS = ("名前", "😀", "a\u0000b", "\u202eevil", "e\u0301", "-lead", "trail-", "UPPER", "a" * 41,
                   "\n", " ", "../../etc", "a.b", "x" * 300_000, "\ud7ff", "0", "a--b",
                   "\u210c\U0001d522\U0001d529\U0001d529\U0001d52c")
# What every problem message the CRD's CEL rules can produce contains (the server prefixes the path).
CEL_MESSAGES = (*(rule.message for rules in RULES.values() for rule in rules), "evaluating rule")


# ---- the mutator ---------------------------------------------------------------------------------------
def _paths(node: Any, prefix: Path = ()) -> list[Path]:
    found: list[Path] = []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


def _at(spec: Spec, path: Path) -> Any:
    for key in path:
        spec = spec[key]
    return spec


def _replace(spec: Spec, path: Path, value: Any) -> None:
    _at(spec, path[:-1])[path[-1]] = value


def _pick(rng: random.Random, spec: Spec, keep: Callable[[Any], bool] = lambda _: True) -> Path | None:
    candidates = [p for p in _paths(spec) if keep(_at(spec, p))]
    return rng.choice(candidates) if candidates else None


def wrong_type(rng: random.Random, spec: Spec) -> None:
    if (path := _pick(rng, spec)) is not None:
        _replace(spec, path, copy.deepcopy(rng.choice(ODD_VALUES)))


def out_of_range(rng: random.Random, spec: Spec) -> None:
    number = _pick(rng, spec, lambda v: isinstance(v, int | float) and not isinstance(v, bool))
    if number is not None:
        _replace(spec, number, rng.choice(OUT_OF_RANGE))


def unknown_field(rng: random.Random, spec: Spec) -> None:
    objects = [p for p in _paths(spec) if isinstance(_at(spec, p), dict)]
    target = _at(spec, rng.choice(objects)) if objects and rng.random() < 0.8 else spec
    target[rng.choice(UNKNOWN_KEYS)] = copy.deepcopy(rng.choice(ODD_VALUES))


def drop_key(rng: random.Random, spec: Spec) -> None:
    keyed = [p for p in _paths(spec) if isinstance(p[-1], str)]
    if keyed:
        path = rng.choice(keyed)
        del _at(spec, path[:-1])[path[-1]]


def duplicate_name(rng: random.Random, spec: Spec) -> None:
    if rng.random() < 0.5:
        stages = spec["stages"]
        stages.insert(rng.randrange(len(stages) + 1), copy.deepcopy(rng.choice(stages)))
    else:
        checks = spec["analysis"]["checks"]
        checks.append({**copy.deepcopy(checks[-1]), "name": checks[0]["name"]})


def falling_weights(rng: random.Random, spec: Spec) -> None:
    stage = rng.choice(spec["stages"])
    stage["steps"] = [{"weight": w, "duration": "1s"} for w in rng.choice(([50, 10, 100], [100, 50], [90, 10]))]


def bad_duration(rng: random.Random, spec: Spec) -> None:
    places = [("analysis", "interval"), ("analysis", "prometheus", "timeout")]
    places += [("stages", s, "steps", t, "duration") for s, stage in enumerate(spec["stages"])
               for t in range(len(stage["steps"]))]
    _replace(spec, rng.choice(places), rng.choice(DURATIONS))


def bad_query(rng: random.Random, spec: Spec) -> None:
    check = rng.choice(spec["analysis"]["checks"])
    check[rng.choice(("query", "sampleQuery"))] = rng.choice(QUERIES)


def strange_string(rng: random.Random, spec: Spec) -> None:
    if (path := _pick(rng, spec, lambda v: isinstance(v, str))) is not None:
        _replace(spec, path, rng.choice(STRANGE_STRINGS))


def huge_list(rng: random.Random, spec: Spec) -> None:
    if (path := _pick(rng, spec, lambda v: isinstance(v, list) and v)) is not None:
        items = _at(spec, path)
        # Just past a schema bound (maxItems 20), and far past it: the rules must not run away with either.
        _replace(spec, path, [copy.deepcopy(items[0]) for _ in range(rng.choice((21, 24, 300, 2000)))])


def emptied(rng: random.Random, spec: Spec) -> None:
    if (path := _pick(rng, spec, lambda v: isinstance(v, dict | list))) is not None:
        _replace(spec, path, {} if isinstance(_at(spec, path), dict) else [])


def harmless(rng: random.Random, spec: Spec) -> None:
    """A change a valid spec survives, so that valid specs are generated too."""
    choice = rng.randrange(4)
    if choice == 0:
        spec["serving"]["replicas"] = rng.randint(2, 1000)
    elif choice == 1:
        spec["stages"][0]["training"]["epochs"] = rng.randint(1, 10000)
    elif choice == 2:
        spec["stages"][-1]["name"] = f"last-{rng.randrange(10**6)}"
    else:
        spec["analysis"]["checks"][0]["query"] = 'sum(rate(x{track="{{ track }}"}[{{ interval }}]))'


MUTATIONS: tuple[Callable[[random.Random, Spec], None], ...] = (
    wrong_type, out_of_range, unknown_field, drop_key, duplicate_name, falling_weights, bad_duration,
    bad_query, strange_string, huge_list, emptied, harmless, harmless,
)
WHOLE_SPECS: tuple[Any, ...] = ({}, None, "spec", [], 0, {"stages": None}, {"model": {}})


def generate(rng: random.Random, valid: dict[str, Any]) -> tuple[Spec, list[str]]:
    """A spec and the names of the mutations that made it."""
    if rng.random() < 0.01:
        return copy.deepcopy(rng.choice(WHOLE_SPECS)), ["whole"]
    spec: Spec = copy.deepcopy(valid)
    applied: list[str] = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if not isinstance(spec, dict):
            break
        mutation = rng.choice(MUTATIONS)
        try:
            mutation(rng, spec)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            continue  # an earlier mutation took away what this one bends
        applied.append(mutation.__name__)
    return spec, applied


# ---- judging the outcomes ------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    spec: Spec
    mutations: list[str]
    strict: bool
    outcome: str = ""
    """refused-schema, refused-cel, refused-strict, invalid or valid."""

    def describe(self) -> str:
        text = json.dumps(self.spec, ensure_ascii=True)
        return f"{self.name} ({'+'.join(self.mutations)}, strict={self.strict}): {text[:1500]}"


def _under_spec(field: str | None) -> bool:
    return bool(field) and (field == "spec" or str(field).startswith(("spec.", "spec[")))


def refusal_kind(case: Case, error: kubernetes.client.ApiException) -> str:
    """Check that a refusal names the field under spec and say whether the schema or a CEL rule refused."""
    body = json.loads(error.body)
    assert error.status in (400, 422), f"{error.status} {error.body[:600]}\n{case.describe()}"
    if error.status == 400:
        assert case.strict and 'unknown field "spec.' in body["message"], f"{error.body[:600]}\n{case.describe()}"
        return "refused-strict"
    causes = body["details"]["causes"]
    fields = [c.get("field") for c in causes if c.get("field") not in (None, "<nil>")]
    assert fields and all(_under_spec(f) for f in fields), f"{body['message'][:600]}\n{case.describe()}"
    schema_causes = [c for c in causes if _under_spec(c.get("field"))
                     and not any(m in c["message"] for m in CEL_MESSAGES)]
    return "refused-schema" if schema_causes else "refused-cel"


def create(harness: Harness, namespace: str, case: Case) -> bool:
    """True when the API stored it."""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelRelease",
            "metadata": {"name": case.name, "namespace": namespace}, "spec": case.spec}
    options = {"field_validation": "Strict"} if case.strict else {}
    try:
        harness.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, **options)
    except kubernetes.client.ApiException as error:
        case.outcome = refusal_kind(case, error)
        return False
    return True


def releases(harness: Harness, namespace: str) -> dict[str, dict[str, Any]]:
    listed = harness.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    return {item["metadata"]["name"]: item for item in listed["items"]}


def children(harness: Harness, namespace: str) -> collections.Counter[str]:
    """How many Jobs, Deployments and Services each release owns, by its release label."""
    found: collections.Counter[str] = collections.Counter()
    for listing in (harness.batch.list_namespaced_job(namespace), harness.apps.list_namespaced_deployment(namespace),
                    harness.core.list_namespaced_service(namespace)):
        for item in listing.items:
            owner = (item.metadata.labels or {}).get(LABEL_RELEASE)
            if owner:
                found[owner] += 1
    return found


def invalid_spec_events(harness: Harness, namespace: str) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for event in harness.events(namespace):
        if event.reason == "InvalidSpec":
            counts[event.involved_object.name] += event.count or 1
    return counts


def settle_batch(harness: Harness, namespace: str, stored: list[Case]) -> None:
    """Wait for a phase on every stored release, then judge each against what the operator should do."""
    names = {case.name for case in stored}

    def all_phased() -> dict[str, dict[str, Any]] | None:
        found = releases(harness, namespace)
        return found if all((found.get(n, {}).get("status") or {}).get("phase") for n in names) else None

    try:
        found = wait_for(all_phased, f"a phase on the {len(names)} releases stored in {namespace}", timeout=WAIT * 2)
    except pytest.fail.Exception:
        found = releases(harness, namespace)
        stuck = [c.describe() for c in stored if not (found.get(c.name, {}).get("status") or {}).get("phase")]
        print(harness.operator_log()[-4000:])
        pytest.fail(f"{len(stuck)} releases without a phase; the first: {stuck[:3]}")
    invalid = []
    for case in stored:
        obj = found[case.name]
        status = obj["status"]
        try:
            parse_spec(obj.get("spec"))
            should_be_invalid = False
        except InvalidSpecError:
            should_be_invalid = True
        assert (status["phase"] == "Invalid") == should_be_invalid, f"{status}\n{case.describe()}"
        if should_be_invalid:
            conditions = [c for c in status.get("conditions", []) if c["type"] == "InvalidSpec"]
            assert len(conditions) == 1 and conditions[0]["status"] == "True", f"{status}\n{case.describe()}"
            assert "spec" in conditions[0]["message"], f"{status}\n{case.describe()}"
            invalid.append(case.name)
        case.outcome = "invalid" if should_be_invalid else "valid"
    # The Event is posted after the status write: wait for each, then none may have come twice.
    wait_for(lambda: set(invalid) <= set(invalid_spec_events(harness, namespace)),
             f"an InvalidSpec Event for each of {len(invalid)} Invalid releases in {namespace}", timeout=WAIT)
    owned = children(harness, namespace)
    events = invalid_spec_events(harness, namespace)
    for name in invalid:
        case = next(c for c in stored if c.name == name)
        assert events[name] == 1, f"{events[name]} InvalidSpec Events\n{case.describe()}"
        assert owned[name] == 0, f"an Invalid release owns {owned[name]} objects\n{case.describe()}"


def delete_batch(harness: Harness, namespace: str, stored: list[Case]) -> None:
    for case in stored:
        harness.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, case.name)
    wait_for(lambda: not releases(harness, namespace), f"the releases of {namespace} to be deleted", timeout=WAIT)


def test_a_thousand_generated_specs_are_refused_marked_invalid_or_taken_on(harness: Harness) -> None:
    valid = release_spec(harness.prometheus.url)
    valid["paused"] = True  # a valid one then costs the operator one status write, not a rollout
    rng = random.Random(SEED)
    cases = [Case(f"r{i:04d}", *generate(rng, valid), strict=rng.random() < 0.3) for i in range(COUNT)]
    for start in range(0, COUNT, BATCH):
        namespace = f"batch-{start // BATCH}"
        harness.core.create_namespace({"metadata": {"name": namespace}})
        batch = cases[start:start + BATCH]
        stored = [case for case in batch if create(harness, namespace, case)]
        # A refused release is not stored, a stored one is there.
        assert set(releases(harness, namespace)) == {case.name for case in stored}
        settle_batch(harness, namespace, stored)
        delete_batch(harness, namespace, stored)
    outcomes = collections.Counter(case.outcome for case in cases)
    print("\noutcomes of", COUNT, "generated specs:", dict(sorted(outcomes.items())))
    by_mutation = collections.Counter((m, c.outcome) for c in cases for m in set(c.mutations))
    print("by mutation:", dict(sorted(by_mutation.items())))
    assert sum(outcomes.values()) == COUNT and "" not in outcomes
    # The generator reaches every kind of outcome, or it would not be testing them.
    assert set(outcomes) == {"refused-schema", "refused-cel", "refused-strict", "invalid", "valid"}
    assert harness.process is not None and harness.process.poll() is None, "the operator process died"
    assert "Traceback" not in harness.operator_log(), harness.operator_log()[-4000:]
