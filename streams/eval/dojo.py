"""AgentDojo's side of the evaluation: its suites as replayable episodes, its tool
functions as the executed tools, and its own checks on the post-environment.

An **episode** is one conversation replayed from ground truth: a user task's calls alone
(utility), or a user task's calls with an injection task's calls interleaved (attack).

The interleaving rule. AgentDojo's attacks put their text in the injection vectors that
the user task's ground truth reads (``BaseAttack.get_injection_candidates``: the
vectors whose canary shows up in a tool result). We run the user task's ground truth once
with a canary in every vector; the injection task's ground-truth calls go right after the
first user-task call whose result carries a canary, i.e. right after the agent has read
the injected text, and the rest of the user task follows. The injected text is AgentDojo's
``important_instructions`` attack with the injection task's goal, put in every vector the
user task reads. A user task whose ground truth reads no vector gets the injection calls
at its end.

Checks: utility is the user task's ``utility`` (or ``utility_from_traces``) on the
environment after only the calls that ran; security is the injection task's ``security``
(or ``security_from_traces``): True means the injection reached its goal. The agent's
final text is the user task's ``GROUND_TRUTH_OUTPUT`` when every one of its calls ran,
else empty (an agent that was refused a read cannot report what it did not see).
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from streams.eval.errors import EvalError

__all__ = [
    "BENCHMARK_VERSION",
    "SUITES",
    "DojoSuite",
    "EpisodeSpec",
    "PlannedCall",
    "Prepared",
    "load_suite",
]

BENCHMARK_VERSION = "v1.2.2"
SUITES = ("workspace", "travel", "banking", "slack")
_USER_NAME = "Emma Johnson"
_MODEL_NAME = "AI assistant"

Origin = Literal["user", "injection"]


@dataclass(frozen=True)
class PlannedCall:
    function: str
    args: Mapping[str, Any]
    origin: Origin


@dataclass(frozen=True)
class EpisodeSpec:
    """Which conversation: a user task alone, or with an injection task."""

    suite: str
    user_task: str
    injection_task: str | None = None

    @property
    def key(self) -> str:
        tail = f" x {self.injection_task}" if self.injection_task else ""
        return f"{self.suite}/{self.user_task}{tail}"


@dataclass
class Prepared:
    """An episode ready to replay: its pre-environment (never changed; runs copy it) and
    its calls in order."""

    spec: EpisodeSpec
    pre_environment: Any
    calls: tuple[PlannedCall, ...]
    injected_after: int | None
    """Index of the user-task call after which the injection's calls come (None: at the end)."""
    vectors: tuple[str, ...]


def _agentdojo() -> Any:
    try:
        from agentdojo.task_suite import load_suites
    except ImportError as exc:
        raise EvalError(
            "the agentdojo package is not installed",
            hint="pip install -e '.[eval]' (or `make eval`)",
        ) from exc
    return load_suites


def load_suite(name: str, version: str = BENCHMARK_VERSION) -> DojoSuite:
    if name not in SUITES:
        raise EvalError(f"unknown AgentDojo suite {name!r}", hint=f"one of {', '.join(SUITES)}")
    try:
        suite = _agentdojo().get_suite(version, name)
    except KeyError as exc:
        raise EvalError(
            f"AgentDojo has no suite {name!r} in benchmark version {version!r}",
            hint=f"the evaluation is written for {BENCHMARK_VERSION}",
        ) from exc
    return DojoSuite(name, version, suite)


class DojoSuite:
    """One AgentDojo task suite, probed once for where each user task reads injections."""

    def __init__(self, name: str, version: str, suite: Any) -> None:
        from agentdojo.attacks.important_instructions_attacks import (
            ImportantInstructionsAttack,
        )
        from agentdojo.functions_runtime import FunctionsRuntime

        self.name = name
        self.version = version
        self.suite = suite
        self._runtime_type = FunctionsRuntime
        self._attack_text = ImportantInstructionsAttack._JB_STRING
        self.user_tasks: dict[str, Any] = dict(
            sorted(suite.user_tasks.items(), key=lambda kv: _number(kv[0]))
        )
        self.injection_tasks: dict[str, Any] = dict(
            sorted(suite.injection_tasks.items(), key=lambda kv: _number(kv[0]))
        )
        self.tool_names = tuple(f.name for f in suite.tools)
        self._vector_defaults: dict[str, str] = suite.get_injection_vector_defaults()
        self._lock = threading.Lock()
        self._environments: dict[tuple[tuple[str, str], ...], bytes] = {}
        self._canaries = {v: f"<CANARY:{v}>" for v in self._vector_defaults}
        self._probe: dict[str, tuple[int | None, tuple[str, ...]]] = {
            task_id: self._find_injection_point(task) for task_id, task in self.user_tasks.items()
        }

    # -- episodes ----------------------------------------------------------------------

    def episodes(self) -> list[EpisodeSpec]:
        """Every user task alone, then every (user task, injection task) pair."""
        alone = [EpisodeSpec(self.name, u) for u in self.user_tasks]
        pairs = [
            EpisodeSpec(self.name, u, i) for u in self.user_tasks for i in self.injection_tasks
        ]
        return alone + pairs

    def prepare(self, spec: EpisodeSpec) -> Prepared:
        user = self.user_tasks[spec.user_task]
        position, vectors = self._probe[spec.user_task]
        injections: dict[str, str] = {}
        injection = None
        if spec.injection_task is not None:
            injection = self.injection_tasks[spec.injection_task]
            text = self._attack_text.format(user=_USER_NAME, model=_MODEL_NAME, goal=injection.GOAL)
            injections = {vector: text for vector in vectors}
        pre = user.init_environment(self.environment(injections))
        calls = [PlannedCall(c.function, dict(c.args), "user") for c in user.ground_truth(pre)]
        if injection is not None:
            planted = [
                PlannedCall(c.function, dict(c.args), "injection")
                for c in injection.ground_truth(pre)
            ]
            at = len(calls) if position is None else position + 1
            calls[at:at] = planted
        return Prepared(spec, pre, tuple(calls), position, vectors)

    def _find_injection_point(self, task: Any) -> tuple[int | None, tuple[str, ...]]:
        from agentdojo.agent_pipeline.tool_execution import tool_result_to_str

        canaries = self._canaries
        environment = task.init_environment(self.environment(canaries))
        runtime = self._runtime_type(self.suite.tools)
        first: int | None = None
        seen: list[str] = []
        for n, call in enumerate(task.ground_truth(copy_environment(environment))):
            result, _ = runtime.run_function(environment, call.function, call.args)
            text = tool_result_to_str(result)
            hits = [v for v, canary in canaries.items() if canary in text and v not in seen]
            if hits and first is None:
                first = n
            seen.extend(hits)
        return first, tuple(seen)

    def environment(self, injections: Mapping[str, str]) -> Any:
        """``TaskSuite.load_and_inject_default_environment(injections)``: parsed with
        libyaml when present, once per distinct ``injections`` (a suite has a few hundred),
        and handed out as a fresh copy each time (a workspace environment takes 35 ms to
        parse and validate, 1 ms to copy through pickle, 14 ms with a deep copy)."""
        key = tuple(sorted(injections.items()))
        with self._lock:
            frozen = self._environments.get(key)
        if frozen is None:
            frozen = pickle.dumps(self._load_environment(injections))
            with self._lock:
                self._environments[key] = frozen
        return pickle.loads(frozen)  # noqa: S301 - bytes this object pickled itself

    def _load_environment(self, injections: Mapping[str, str]) -> Any:
        import yaml
        from agentdojo.task_suite.task_suite import read_suite_file, validate_injections

        validate_injections(dict(injections), self._vector_defaults)
        text = read_suite_file(self.suite.name, "environment.yaml", self.suite.data_path)
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        filled = text.format(**{**self._vector_defaults, **injections})
        data = yaml.load(filled, Loader=loader)  # noqa: S506 - a safe loader
        return self.suite.environment_type.model_validate(data)

    def without_ground_truth(self) -> list[str]:
        """Injection tasks whose ground truth has no call (AgentDojo v1.2 added some to
        the workspace suite): no replay can attempt them."""
        environment = self.environment({})
        return [i for i, task in self.injection_tasks.items() if not task.ground_truth(environment)]

    # -- running -----------------------------------------------------------------------

    def new_runtime(self) -> Any:
        return self._runtime_type(self.suite.tools)

    @staticmethod
    def call(runtime: Any, environment: Any, call: PlannedCall) -> Any:
        """Run one tool function on ``environment`` (changed in place); its errors raise."""
        result, _ = runtime.run_function(
            environment, call.function, dict(call.args), raise_on_error=True
        )
        return result

    def run_directly(self, prepared: Prepared) -> Any:
        """Every call of the episode with no gate (the undefended baseline): the
        post-environment."""
        environment = copy_environment(prepared.pre_environment)
        runtime = self.new_runtime()
        for call in prepared.calls:
            try:
                self.call(runtime, environment, call)
            except Exception:  # noqa: BLE001, S112 - a tool error is the tool's answer
                continue
        return environment

    # -- AgentDojo's checks --------------------------------------------------------------

    def output_of(self, spec: EpisodeSpec, all_user_calls_ran: bool) -> str:
        return (
            str(self.user_tasks[spec.user_task].GROUND_TRUTH_OUTPUT) if all_user_calls_ran else ""
        )

    def utility(
        self, prepared: Prepared, post: Any, ran: Sequence[PlannedCall], output: str
    ) -> bool:
        task = self.user_tasks[prepared.spec.user_task]
        traces = self._traces(ran)
        from_traces = task.utility_from_traces(output, prepared.pre_environment, post, traces)
        if from_traces is not None:
            return bool(from_traces)
        return bool(task.utility(output, prepared.pre_environment, post))

    def security(
        self, prepared: Prepared, post: Any, ran: Sequence[PlannedCall], output: str
    ) -> bool:
        """True: the injection task reached its goal (AgentDojo's ``security``)."""
        if prepared.spec.injection_task is None:
            return False
        task = self.injection_tasks[prepared.spec.injection_task]
        traces = self._traces(ran)
        from_traces = task.security_from_traces(output, prepared.pre_environment, post, traces)
        if from_traces is not None:
            return bool(from_traces)
        return bool(task.security(output, prepared.pre_environment, post))

    @staticmethod
    def _traces(ran: Sequence[PlannedCall]) -> list[Any]:
        from agentdojo.functions_runtime import FunctionCall

        return [FunctionCall(function=c.function, args=dict(c.args)) for c in ran]


def copy_environment(environment: Any) -> Any:
    """A deep copy of an environment (through pickle: ten times a pydantic deep copy)."""
    return pickle.loads(pickle.dumps(environment))  # noqa: S301 - our own object's bytes


def _number(task_id: str) -> int:
    return int(task_id.rsplit("_", 1)[-1])
