"""The gateway engine: route a request to a task, let its specialist answer, and escalate
through the tiers when the answer is below the task's threshold. Every request, answered
or failed, becomes one row of the request log."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid

from smallfleet.flywheel.feedback import FeedbackError, give_feedback
from smallfleet.pii import redact
from smallfleet.serve.audit import Auditor
from smallfleet.serve.fleet import ServedFleet, ServedTask
from smallfleet.serve.limits import KeyLimiter
from smallfleet.serve.metrics import GatewayMetrics
from smallfleet.serve.shadow import Shadow
from smallfleet.serve.protocol import ChatCompletionRequest, Completion, FeedbackRequest
from smallfleet.store.ledger import SPECIALIST_TIER, Ledger, new_row
from smallfleet.tasks import SavedTask, get_kind
from smallfleet.tasks.specialist import Answer, EscalationRequest
from smallfleet.tokens import estimate_prompt_tokens, estimate_tokens
from smallfleet.tiers.base import Tier, TierFailure, TierReply, TierRequest

log = logging.getLogger("smallfleet.gateway")
FLEET_MODEL = "fleet"
AUTO_MODEL = "auto"
"""Model alias whose requests triage sends to the tier whose predicted gain is worth its price."""


class GatewayError(Exception):
    """A request the gateway could not answer: HTTP status, reason, and the tiers tried."""

    def __init__(self, status: int, message: str, tried: list[str] | None = None, code: str | None = None,
                 task: str | None = None, retry_after: int | None = None):  # fmt: skip
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds after which trying again may work (the Retry-After header); None when it will not help."""
        self.status = status
        self.message = message
        self.tried = tried or []
        self.code = code
        self.task = task
        self.model: str | None = None
        """The model the request asked for, when it was read (set for requests refused before the engine)."""
        self.input: str | None = None
        """What the request log keeps of a refused request's body; None when it was not read."""


class Gateway:
    """Answers chat-completion requests with the fleet and its tiers, logging each one."""

    def __init__(self, fleet: ServedFleet, tiers: list[Tier], ledger: Ledger, metrics: GatewayMetrics):
        self.fleet = fleet
        self.tiers = tiers
        self.ledger = ledger
        self.metrics = metrics
        self.upstreams = [t for t in tiers if t.model]
        self.shadow = Shadow(fleet.shadows, ledger.db, fleet.folder)
        self.limiter = KeyLimiter(ledger.db)
        for tier in tiers:
            metrics.watch_circuit(tier.name, tier.breaker)
        self.auditor = Auditor(fleet.serving.audit_rate, self.upstreams[0] if self.upstreams else None, ledger.db,
                               metrics)  # fmt: skip

    def circuits(self) -> dict[str, str]:
        """Each tier's circuit: `closed`, `open` (skipped for a cool-down) or `half-open` (next request is a trial)."""
        return {t.name: t.breaker.state for t in self.tiers}

    def models(self) -> list[str]:
        """Model names clients may ask for."""
        names = [FLEET_MODEL] + [f"{FLEET_MODEL}/{t}" for t in self.fleet.tasks]
        names += [AUTO_MODEL] if self.fleet.triage else []
        return names + sorted({t.model for t in self.upstreams} - set(names))

    async def admit(self, request: ChatCompletionRequest, api_key: str | None) -> None:
        """Take the request from its key's budget and rate limits; GatewayError(429) naming the limit when one is
        reached, with the seconds until it resets."""
        refusal = await self.limiter.admit(api_key, request.input_text())
        if refusal is not None:
            error = GatewayError(429, refusal.message, code="rate_limit_exceeded", retry_after=refusal.retry_after)
            error.model = request.model
            raise error

    async def complete(self, request: ChatCompletionRequest, api_key: str | None = None) -> Completion:
        """Answer one request; raises GatewayError with the status to return. Always logs the request."""
        started = time.perf_counter()
        text = request.input_text()
        row = {"model": request.model, "api_key": api_key, "input": self._logged_input(text),
               "system": self._logged_input(request.system_text())}
        try:
            try:
                completion = await self._dispatch(request, text)
            except GatewayError:
                raise
            except Exception as exc:  # a specialist crashed: the client gets a 500 and the log keeps the request
                log.exception("request failed")
                raise GatewayError(500, f"internal error: {type(exc).__name__}: {exc}", code="internal_error") from exc
        except GatewayError as exc:
            latency = (time.perf_counter() - started) * 1000
            self.ledger.record(new_row(**row, request_id="chatcmpl-" + uuid.uuid4().hex, task=exc.task,
                                       status="error", http_status=exc.status, error=exc.message, tried=exc.tried,
                                       latency_ms=latency, escalated=bool(exc.tried)))  # fmt: skip
            self.metrics.observe(exc.task, "error", "error", bool(exc.tried), latency / 1000)
            raise
        completion.latency_ms = (time.perf_counter() - started) * 1000
        self.ledger.record(
            new_row(**row, request_id=completion.request_id, task=completion.task, tier=completion.tier,
                    route_confidence=completion.route_confidence, confidence=completion.confidence,
                    escalated=completion.escalated, status=completion.status, http_status=200,
                    output=self._logged_output(completion.content), prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens, latency_ms=completion.latency_ms,
                    cost_usd=completion.cost_usd, frontier_cost_usd=completion.frontier_cost_usd,
                    tried=completion.tried, version=completion.version, **_triage_columns(completion),
                    guess=completion.guess if completion.tier != SPECIALIST_TIER else None)  # fmt: skip
        )
        self.metrics.observe(completion.task, completion.tier, completion.status, completion.escalated,
                             completion.latency_ms / 1000)  # fmt: skip
        await self.limiter.charge(api_key, text, completion.prompt_tokens, completion.completion_tokens,
                                  completion.cost_usd)  # fmt: skip
        return completion

    def refused(self, error: GatewayError, api_key: str | None = None) -> None:
        """Log a request refused before it reached the engine (no or bad key, unreadable or oversized body).

        Args:
            error: The refusal the client gets; its `model` and `input` are what could be read of the request
                (nothing for a 401: the body of an unauthenticated caller is never read or stored).
            api_key: The caller's key name, when the key was accepted.
        """
        self.ledger.record(new_row(model=error.model, api_key=api_key, input=self._logged_input(error.input), status="error",
                                   request_id="chatcmpl-" + uuid.uuid4().hex, http_status=error.status,
                                   error=error.message))  # fmt: skip
        self.metrics.observe(None, "error", "error", False, 0.0)

    def _logged_input(self, text: str | None) -> str | None:
        """What the request log keeps of an input: all of it, redacted or nothing (`serving.log_inputs`)."""
        mode = self.fleet.serving.log_inputs
        if text is None or mode == "full":
            return text
        return redact(text) if mode == "redacted" else None

    def _logged_output(self, text: str) -> str:
        """What the request log keeps of an answer: redacted with `log_inputs: redacted` (an answer an upstream
        wrote from a redacted request carries the personal data put back), else all of it."""
        return redact(text) if self.fleet.serving.log_inputs == "redacted" else text

    async def feedback(self, body: FeedbackRequest, key: str | None, role: str | None) -> dict:
        """Record feedback on a logged request (see `flywheel/feedback.py`); GatewayError 400/403/404 when refused."""
        try:
            stored = await asyncio.to_thread(give_feedback, self.ledger.db, self._saved_task, body.request_id,
                                             body.answer, body.correct, key, role, self.ledger.find(body.request_id))  # fmt: skip
        except FeedbackError as exc:
            raise GatewayError(exc.status, str(exc), code="invalid_feedback") from None
        if stored["agrees"] is not None:  # ground truth on an answer the specialist gave: re-test the guarantee
            await self.auditor.check(self.fleet.tasks[stored["task"]])
        return stored

    def _saved_task(self, name: str) -> SavedTask:
        task = self.fleet.tasks.get(name)
        if task is None:
            raise FeedbackError(400, f"task {name!r} is not served by this gateway (tasks: {', '.join(self.fleet.tasks)})")
        s = task.specialist
        return SavedTask(s.folder, s.manifest, get_kind(s.kind))

    def live_stream_task(self, request: ChatCompletionRequest) -> ServedTask | None:
        """The task that can stream this request token by token: a `fleet/<task>` whose specialist streams
        and that has nothing to escalate to (a cascade must see the whole answer's confidence first)."""
        if not request.stream or not request.model.startswith(FLEET_MODEL + "/"):
            return None
        task = self.fleet.tasks.get(request.model.split("/", 1)[1])
        if task is None or not task.specialist.can_stream or (self.tiers and task.threshold > 0):
            return None
        return task

    async def stream_live(self, task: ServedTask, request: ChatCompletionRequest, api_key: str | None):
        """Yield the specialist's answer in pieces (str) as it generates them, then the Completion; logs the request."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        text = request.input_text()
        started = time.perf_counter()

        def produce() -> None:
            try:
                for piece in task.specialist.stream(text, request.options()):
                    loop.call_soon_threadsafe(pieces.put_nowait, piece)
                loop.call_soon_threadsafe(pieces.put_nowait, None)
            except Exception as exc:  # handed to the response, which ends with an error event
                loop.call_soon_threadsafe(pieces.put_nowait, exc)

        threading.Thread(target=produce, name=f"smallfleet-stream-{task.name}", daemon=True).start()
        content, error = [], None
        while True:
            piece = await pieces.get()
            if piece is None:
                break
            if isinstance(piece, Exception):
                error = f"{type(piece).__name__}: {piece}"
                break
            content.append(piece)
            yield piece
        seconds = time.perf_counter() - started
        answer = "".join(content)
        completion = Completion(content=answer, tier=SPECIALIST_TIER, task=task.name, confidence=None, version=task.version,
                                cost_usd=self.fleet.compute_cost(seconds), latency_ms=seconds * 1000,
                                frontier_cost_usd=self._frontier_cost(task.specialist.escalation_request(text).messages, answer),
                                prompt_tokens=estimate_prompt_tokens([{"content": text}]),
                                completion_tokens=estimate_tokens(answer))  # fmt: skip
        self.ledger.record(
            new_row(model=request.model, api_key=api_key, input=self._logged_input(text), request_id=completion.request_id,
                    task=task.name,
                    version=task.version,
                    tier=SPECIALIST_TIER, status="error" if error else "ok", http_status=200, output=self._logged_output(answer),
                    prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
                    latency_ms=completion.latency_ms, cost_usd=completion.cost_usd,
                    frontier_cost_usd=completion.frontier_cost_usd, error=error)  # fmt: skip
        )
        self.metrics.observe(task.name, SPECIALIST_TIER, "error" if error else "ok", False, seconds)
        await self.limiter.charge(api_key, text, completion.prompt_tokens, completion.completion_tokens,
                                  completion.cost_usd)  # fmt: skip
        if error:
            raise GatewayError(500, f"generation failed: {error}", code="internal_error", task=task.name)
        yield completion

    async def _dispatch(self, request: ChatCompletionRequest, text: str) -> Completion:
        model = request.model
        if model == FLEET_MODEL:
            if len(self.fleet.tasks) == 1:
                return await self._answer(next(iter(self.fleet.tasks.values())), request, text)
            if self.fleet.router_batcher is None:  # trained without a `router:` section
                raise GatewayError(400, "this fleet has no router, so model 'fleet' cannot pick a task: name one with "
                                   f"model 'fleet/<task>' (tasks: {', '.join(self.fleet.tasks)})", code="model_not_found")
            route, seconds = await self.fleet.router_batcher.submit(text)
            if route.task is None and self.fleet.triage:
                completion = await self._triaged(request, text, escalated=True)
            elif route.task is None:
                completion = await self._passthrough(request, text, self.tiers, escalated=True)
            elif not self.fleet.tasks[route.task].live:  # a distilled task in shadow: the tiers answer, it follows
                completion = await self._passthrough(request, text, self.tiers, escalated=True)
                self.shadow.follow_upstream(self.fleet.tasks[route.task], text, request.options(), completion)
            else:
                completion = await self._answer(self.fleet.tasks[route.task], request, text)
            if route.task is None:
                completion.escalation_reason = [f"route {test}" for test in route.failed]
            completion.route_confidence = route.confidence
            completion.route_novelty = route.novelty
            completion.cost_usd += self.fleet.compute_cost(seconds)
            return completion
        if model.startswith(FLEET_MODEL + "/"):
            name = model.split("/", 1)[1]
            if name not in self.fleet.tasks:
                raise GatewayError(404, f"no task {name!r} in this fleet (tasks: {', '.join(self.fleet.tasks)})",
                                   code="model_not_found")  # fmt: skip
            return await self._answer(self.fleet.tasks[name], request, text)
        if model == AUTO_MODEL and self.fleet.triage:
            return await self._triaged(request, text, escalated=False)
        if not self.upstreams:
            raise GatewayError(404, f"unknown model {model!r}: this gateway serves {', '.join(self.models())}",
                               code="model_not_found")  # fmt: skip
        task = self.fleet.template_task(request.system_text(), text)  # frontier traffic a task was distilled from
        if task is not None and task.live:  # below its threshold, the frontier gets the client's own messages
            return await self._answer(task, request, task.template.strip(text), client_prompt=True)
        completion = await self._passthrough(request, text, self.upstreams[:1], escalated=False)
        if task is not None:  # in shadow: the task answers too, in the background, judged against the frontier
            self.shadow.follow_upstream(task, task.template.strip(text), request.options(), completion)
        return completion

    async def _answer(self, task: ServedTask, request: ChatCompletionRequest, text: str,
                      client_prompt: bool = False) -> Completion:  # fmt: skip
        """The task's cascade answers; a shadow version of the task then answers too, in the background.
        `client_prompt`: escalate with the client's own messages (traffic a task was distilled from), not the task's."""
        completion = await self._cascade(task, request, text, client_prompt)
        if "busy" not in completion.escalation_reason:  # a shed request adds no work to the busy machine
            self.shadow.follow(task, text, request.options(), completion)
        return completion

    async def _cascade(self, task: ServedTask, request: ChatCompletionRequest, text: str,
                       client_prompt: bool = False) -> Completion:  # fmt: skip
        """The specialist answers; below the threshold (or invalid), the tiers are tried in order. When the task's
        queue holds more than `serving.max_wait_seconds` of work, the tiers answer at once (`busy`)."""
        escalation = task.specialist.escalation_request(text)
        if client_prompt:
            escalation = EscalationRequest(request.model_dump(include={"messages"})["messages"],
                                           escalation.response_format)  # fmt: skip
        limit = self.fleet.serving.max_wait_seconds
        if limit and self.tiers and task.batcher.expected_wait() > limit:
            return await self._shed(task, request, text, escalation)
        answer, seconds = await task.batcher.submit(text, request.options())
        own_cost = self.fleet.compute_cost(seconds)
        frontier = self._frontier_cost(escalation.messages, answer.content)
        failed = failed_tests(task, answer)
        accepted = not failed
        result = Completion(content=answer.content, tier=SPECIALIST_TIER, task=task.name, confidence=answer.confidence,
                            novelty=answer.novelty, escalation_reason=failed,
                            version=task.version, guess=answer.content, accepted=accepted, cost_usd=own_cost,
                            frontier_cost_usd=frontier,
                            prompt_tokens=estimate_prompt_tokens([{"content": text}]),
                            completion_tokens=answer.detail.get("tokens") or estimate_tokens(answer.content))  # fmt: skip
        if accepted and self.auditor.draw():  # checked on live traffic, in the background
            self.auditor.audit(task, self._tier_request(escalation, task, request, text, result, answer), answer.content)
        if accepted or not self.tiers:
            return result
        tier_request = self._tier_request(escalation, task, request, text, result, answer)
        return await self._ask_tiers(task, result, tier_request, frontier)

    async def _shed(self, task: ServedTask, request: ChatCompletionRequest, text: str,
                    escalation: EscalationRequest) -> Completion:  # fmt: skip
        """The task's queue is too long: the tiers answer without the specialist (no guess, no confidence)."""
        self.metrics.shed(task.name)
        result = Completion(content="", tier=SPECIALIST_TIER, task=task.name, escalation_reason=["busy"],
                            version=task.version, accepted=False,
                            prompt_tokens=estimate_prompt_tokens([{"content": text}]))  # fmt: skip
        no_answer = Answer(content="", confidence=0.0)
        return await self._ask_tiers(task, result, self._tier_request(escalation, task, request, text, result, no_answer),
                                     self._frontier_cost(escalation.messages, ""))  # fmt: skip

    async def _ask_tiers(self, task: ServedTask, result: Completion, tier_request: TierRequest,
                         frontier: float) -> Completion:  # fmt: skip
        """The escalation tiers in order, until one gives an answer the task can use."""
        tried, unavailable = [], False
        for tier in self.tiers:
            try:
                reply = await tier.ask(tier_request)
            except TierFailure as exc:
                tried.append(str(exc))
                unavailable |= exc.kind == TierFailure.UNAVAILABLE
                continue
            result.cost_usd += reply.cost_usd
            if reply.pending_review is not None:
                return self._pending(result, tier.name, reply, tried)
            mapped = task.specialist.parse_escalation(reply.content)
            if mapped is None:
                tried.append(f"{tier.name}: reply could not be used for task {task.name}")
                continue
            result.frontier_cost_usd = max(frontier, reply.cost_usd)
            return self._escalated(result, tier.name, mapped.content, reply, tried)
        raise _no_tier_answered(tried, unavailable, task.name)

    @staticmethod
    def _tier_request(escalation: EscalationRequest, task: ServedTask, request: ChatCompletionRequest, text: str,
                      result: Completion, answer: Answer) -> TierRequest:  # fmt: skip
        """What a tier is asked for this task's request: the specialist's prompt in place of the client's
        messages, with the client's decoding options."""
        body = request.model_dump(include={"max_tokens", "max_completion_tokens", "temperature", "top_p", "stop"},
                                  exclude_none=True)  # fmt: skip
        body["messages"] = escalation.messages
        if escalation.response_format:
            body["response_format"] = escalation.response_format
        return TierRequest(body=body, task=task.name, text=text, request_id=result.request_id,
                           guess=answer.content, guess_confidence=answer.confidence)  # fmt: skip

    async def _triaged(self, request: ChatCompletionRequest, text: str, escalated: bool) -> Completion:
        """Triage picks the tier to ask first (its predicted gain worth its price); the others follow in order
        if it fails. `escalated`: the request left the specialist fleet (router `none`), whichever tier answers."""
        predicted, seconds = await self.fleet.triage_batcher.submit(text)
        messages = request.model_dump(include={"messages"})["messages"]
        costs = {t.name: t.estimate_cost(messages, text) for t in self.tiers}
        by_price = sorted(self.tiers, key=lambda t: (costs[t.name], self.tiers.index(t)))
        decision = self.fleet.triage.decide(predicted, [t.name for t in by_price], self.fleet.serving.willingness_to_pay,
                                            [costs[t.name] for t in by_price])  # fmt: skip
        first = [t for t in self.tiers if t.name == decision.tier]
        order = first + [t for t in self.tiers if t.name != decision.tier]
        completion = await self._passthrough(request, text, order, escalated=escalated)
        completion.escalated = escalated or (decision.tier is not None and completion.tier != decision.tier)
        completion.triage = decision.as_dict()
        completion.cost_usd += self.fleet.compute_cost(seconds)
        return completion

    async def _passthrough(self, request: ChatCompletionRequest, text: str, tiers: list, escalated: bool) -> Completion:
        """No specialist fits: the client's own messages go to the tiers as they are."""
        body = request.model_dump(exclude_none=True, exclude={"stream"})
        messages = body["messages"]
        tier_request = TierRequest(body=body, task=None, text=text, request_id="chatcmpl-" + uuid.uuid4().hex)
        tried, unavailable = [], False
        for tier in tiers:
            try:
                reply = await tier.ask(tier_request)
            except TierFailure as exc:
                tried.append(str(exc))
                unavailable |= exc.kind == TierFailure.UNAVAILABLE
                continue
            if reply.pending_review is not None:
                result = Completion(content="", tier=SPECIALIST_TIER, confidence=None, accepted=False,
                                    cost_usd=reply.cost_usd, frontier_cost_usd=self._frontier_cost(messages, ""),
                                    request_id=tier_request.request_id)  # fmt: skip
                return self._pending(result, tier.name, reply, tried)
            result = Completion(content="", tier=tier.name, escalated=escalated, cost_usd=reply.cost_usd,
                                frontier_cost_usd=max(self._frontier_cost(messages, reply.content), reply.cost_usd),
                                request_id=tier_request.request_id)  # fmt: skip
            return self._escalated(result, tier.name, reply.content, reply, tried, escalated=escalated)
        if not tried:
            raise GatewayError(404, "no specialist fits this request and no escalation tier is configured",
                               code="no_route")  # fmt: skip
        raise _no_tier_answered(tried, unavailable)

    def _escalated(self, result: Completion, tier: str, content: str, reply: TierReply, tried: list[str],
                   escalated: bool = True) -> Completion:  # fmt: skip
        result.content = content
        result.tier = tier
        result.escalated = escalated
        result.tried = tried
        result.prompt_tokens = reply.prompt_tokens or result.prompt_tokens
        result.completion_tokens = reply.completion_tokens
        result.finish_reason = reply.finish_reason
        return result

    def _pending(self, result: Completion, tier: str, reply: TierReply, tried: list[str]) -> Completion:
        """The tier deferred the answer (e.g. to a person): the client gets its provisional content, pending."""
        result.content = reply.content
        result.tier = tier
        result.escalated = True
        result.status = "pending"
        result.tried = tried
        result.review = reply.pending_review
        return result

    def _frontier_cost(self, messages: list[dict], content: str) -> float:
        """What the most expensive configured upstream tier would charge for this request."""
        return max((t.estimate_cost(messages, content) for t in self.upstreams), default=0.0)


def failed_tests(task: ServedTask, answer: Answer) -> list[str]:
    """The acceptance tests `answer` fails (empty = accepted): `valid` (an unusable answer), `confidence` (below the
    task's threshold), `novelty` (the input lies farther from the training data than the task's novelty threshold)."""
    failed = [] if answer.valid else ["valid"]
    if answer.confidence < task.threshold:
        failed.append("confidence")
    if task.specialist.novelty and not task.specialist.novelty.accepts(answer.novelty):
        failed.append("novelty")
    return failed


def _triage_columns(completion: Completion) -> dict:
    """The request-log columns of a triage decision (none when triage did not see the request)."""
    if not completion.triage:
        return {}
    return {"triage_tier": completion.triage["tier"], "triage": json.dumps(completion.triage)}


def _no_tier_answered(tried: list[str], unavailable: bool, task: str | None = None) -> GatewayError:
    """Every tier failed: a 502, or a 503 when some tier was not even asked (circuit open, review queue full)
    and trying again later may work."""
    if unavailable:
        return GatewayError(503, "no escalation tier could take the request now: " + "; ".join(tried), tried,
                            code="tiers_unavailable", task=task)  # fmt: skip
    return GatewayError(502, "every escalation tier failed: " + "; ".join(tried), tried, code="upstream_failed",
                        task=task)  # fmt: skip
