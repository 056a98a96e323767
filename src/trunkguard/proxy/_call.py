"""One INVITE and its serial failover across the targets of its plan.

A call tries its targets one at a time. Each attempt (a *branch*) ends in a
response, a timeout (no 100/18x within ``invite_timeout``) or an unreachable
port; the target's failure table says whether that means "try the next one"
or "this is the caller's answer". The caller sees provisionals, then one final
response: the 2xx of the branch that answered, a destination-final response,
or, when every attempt failed, the best response chosen as RFC 3261 §16.7
says (never a carrier's 503 as 503).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from ..health import Q850_TO_STATUS, TIMEOUT, UNREACHABLE, FailureTable, Verdict, q850_cause
from ..sip import ClientInvite, Request, Response
from ._timers import TimerHandle
from ._types import AttemptRecord, Flow, Plan, Target

if TYPE_CHECKING:
    from ._core import Proxy
    from ._entries import ServerEntry

log = logging.getLogger("trunkguard.proxy")

TRYING = "TRYING"  # looking for a target that answers
ANSWERED = "ANSWERED"  # a 2xx went to the caller
DONE = "DONE"  # a non-2xx final went to the caller (or the caller cancelled)


def retry_after(response: Response) -> float | None:
    """Seconds of a Retry-After header (RFC 3261 §20.33), ignoring comment and params."""
    value = response.get("retry-after")
    if not value:
        return None
    digits = value.split("(", 1)[0].split(";", 1)[0].strip()
    return float(digits) if digits.isascii() and digits.isdigit() and len(digits) < 9 else None


def select_final(statuses: list[int | None]) -> int:
    """The response for the caller when every attempt failed (RFC 3261 §16.7 steps 6-7).

    ``None`` is an attempt that got no response at all. A 6xx wins, else the
    lowest class; no response at all is 408. A 503 becomes 500, so the caller
    does not take the proxy itself for overloaded, and a carrier's 401/407
    becomes 403: its challenge is for our account, not for the caller.
    """
    codes = [s for s in statuses if s is not None]
    if not codes:
        return 408
    six = [c for c in codes if c >= 600]
    best = min(six) if six else min(codes, key=lambda c: (c // 100, c))
    if best == 503:
        return 500
    if best in (401, 407):
        return 403
    return best


class Branch:
    """One attempt: the INVITE as sent to one target and what came back."""

    __slots__ = (
        "abandoned",
        "attempt",
        "cancel_pending",
        "cancel_sent",
        "cleaned",
        "first_response",
        "flow",
        "health_id",
        "id",
        "ringing",
        "routes",
        "started",
        "target",
        "timer",
        "txn",
        "uri",
        "via",
    )

    def __init__(
        self,
        target: Target,
        attempt: int,
        branch_id: str,
        uri: str,
        via: str,
        now: float,
    ) -> None:
        self.target = target
        self.flow: Flow = target.flow
        self.attempt = attempt
        self.id = branch_id
        self.uri = uri
        self.via = via
        self.routes: list[str] = []
        self.started = now
        self.first_response: float | None = None
        self.abandoned = False
        self.cancel_pending = False
        self.cancel_sent = False
        self.cleaned = False
        self.timer: TimerHandle | None = None
        self.txn: ClientInvite | None = None
        self.health_id = 0
        self.ringing = False


class Call:
    __slots__ = (
        "attempts",
        "branch",
        "budget_timer",
        "plan",
        "plan_index",
        "proxy",
        "relayed",
        "request",
        "results",
        "server",
        "source",
        "started",
        "state",
        "to_tag",
    )

    def __init__(
        self,
        proxy: Proxy,
        request: Request,
        source: Flow,
        server: ServerEntry,
        plan: Plan,
        now: float,
    ) -> None:
        self.proxy = proxy
        self.request = request
        self.source = source
        self.server = server
        self.plan = plan
        self.plan_index = 0
        self.attempts = 0
        self.branch: Branch | None = None
        self.results: list[int | None] = []
        self.relayed: set[int] = set()
        self.started = now
        self.state = TRYING
        self.to_tag = proxy.tag
        self.budget_timer: TimerHandle | None = proxy.timers.schedule(
            now + proxy.settings.time_budget, self._on_budget
        )

    # -- the failover loop ----------------------------------------------------------
    def start(self, now: float) -> None:
        rejected = self.plan.rejected
        if rejected is not None:
            status, why = rejected
            log.warning(
                "call %s to %s refused with %d: %s",
                self.request.call_id,
                self.request.request_uri.user,
                status,
                why,
            )
            self._final(status, now, extra=[self.proxy.warning(why)])
            return
        if not self.plan.targets and self.plan.overflow:
            # Every healthy route is at capacity: our own 503 (not a carrier's), so the
            # dialer retries shortly instead of taking the number for dead.
            self.proxy.counters["calls_overflow"] += 1
            self._final(
                503,
                now,
                extra=[
                    ("Retry-After", "1"),
                    self.proxy.warning("every route at capacity"),
                ],
            )
            return
        self._next(now)

    def _next(self, now: float) -> None:
        settings = self.proxy.settings
        while (
            self.plan_index < len(self.plan)
            and self.attempts < settings.max_attempts
            and now < self.started + settings.time_budget
        ):
            target = self.plan.targets[self.plan_index]
            self.plan_index += 1
            if self.attempts and not self.plan.panic and not self.proxy.admits(target, now):
                # Out of rotation since the plan was made (tripped by another call, or
                # its one trial slot taken): do not spend this call on it.
                self.proxy.counters["skipped_since_plan"] += 1
                continue
            self.attempts += 1
            if self.attempts > 1:
                self.proxy.counters["failovers"] += 1
            self.branch = self.proxy.start_branch(self, target, self.attempts, now)
            return
        self._give_up(now)

    def last_attempt(self) -> bool:
        """Is the branch being started the last this call may try?"""
        return (
            self.plan_index >= len(self.plan.targets)
            or self.attempts >= self.proxy.settings.max_attempts
        )

    def _give_up(self, now: float) -> None:
        status = select_final(self.results)
        self.proxy.counters["calls_failed"] += 1
        self._final(status, now)

    def _final(self, status: int, now: float, extra: list[tuple[str, str]] | None = None) -> None:
        self.state = DONE
        self._stop_budget()
        data = self.proxy.response(self.request, status, to_tag=self.to_tag, extra=extra or ())
        self.proxy.respond(self.server, status, data, now)

    def _record(
        self,
        branch: Branch,
        status: int | None,
        kind: str,
        verdict: Verdict | None,
        now: float,
        retry_after: float | None = None,
    ) -> None:
        self.proxy.record_attempt(
            branch,
            AttemptRecord(
                call_id=self.request.call_id,
                target=branch.target.name,
                attempt=branch.attempt,
                status=status,
                kind=kind,
                verdict=verdict,
                started=branch.started,
                ended=now,
                first_response=branch.first_response,
                retry_after=retry_after,
            ),
        )

    def _stop_budget(self) -> None:
        # Dropping the handle matters: it refers back to this call (a reference cycle).
        if self.budget_timer is not None:
            self.budget_timer.cancel()
            self.budget_timer = None

    def _stop_branch_timer(self, branch: Branch) -> None:
        if branch.timer is not None:
            branch.timer.cancel()
            branch.timer = None

    # -- inputs from the branch ----------------------------------------------------
    def on_response(self, branch: Branch, response: Response, now: float) -> None:
        status = response.status
        if branch.first_response is None:
            # Any response, even on a branch given up on, shows the target is alive.
            branch.first_response = now
            self.proxy.branch_answered(branch, now)
        if branch is not self.branch or branch.abandoned:
            self.proxy.clean_stray(self, branch, response, now)
            return
        if status < 200:
            if not branch.ringing:
                branch.ringing = True
                self._stop_branch_timer(branch)
                # Timer C: a branch may ring, but not for ever (RFC 3261 §16.6 step 11).
                branch.timer = self.proxy.timers.schedule(
                    now + self.proxy.settings.ring_timeout, partial(self._on_ring_timeout, branch)
                )
            if status == 100 or self.state != TRYING:
                return
            # One 180 upstream however many branches ring; 183 carries early
            # media that differs per branch, so each 183 with a body goes up.
            if status not in self.relayed or (status == 183 and response.body):
                self.relayed.add(status)
                self.proxy.respond(self.server, status, response.without_top_via(), now)
            return
        self._stop_branch_timer(branch)
        if status < 300:
            if self.state == DONE:
                self.proxy.clean_stray(self, branch, response, now)
                return
            first = self.state == TRYING
            self.state = ANSWERED
            self._stop_budget()
            self.proxy.respond(self.server, status, response.without_top_via(), now)
            if first:
                self.proxy.counters["calls_answered"] += 1
                self._record(
                    branch, status, "response", branch.target.failures.classify(status), now
                )
                self.proxy.open_dialog(self, branch, response, now)
            return
        reason = response.get("reason")
        verdict = branch.target.failures.classify(status, reason)
        self._record(branch, status, "response", verdict, now, retry_after(response))
        if self.state != TRYING:
            return
        if verdict.failover:
            self.results.append(status)
            self._next(now)
            return
        self.proxy.counters["calls_final"] += 1
        self.state = DONE
        self._stop_budget()
        if status >= 500 and reason is not None:
            # A destination's answer (busy, no answer...) that the carrier sent as a 5xx,
            # known by its Q.850 cause: relay the status that says so, never the 5xx.
            cause = q850_cause(reason)
            mapped = Q850_TO_STATUS.get(cause, 500) if cause is not None else 500
            data = self.proxy.response(
                self.request, mapped, to_tag=self.to_tag, extra=[("Reason", reason)]
            )
            self.proxy.respond(self.server, mapped, data, now)
            return
        self.proxy.respond(self.server, status, response.without_top_via(), now)

    def on_no_response(self, branch: Branch, kind: str, now: float) -> None:
        """The branch timed out or its target is unreachable: a trunk fault, try the next."""
        if branch is not self.branch or branch.abandoned or self.state != TRYING:
            return
        self._abandon(branch, now)
        self._record(branch, None, kind, FailureTable.local_failure(kind), now)
        # RFC 3261 §8.1.3.1: a transport error counts as a 503, a timeout as nothing received.
        self.results.append(503 if kind == UNREACHABLE else None)
        self._next(now)

    def on_invite_timeout(self, branch: Branch, now: float) -> None:
        branch.timer = None
        if branch.first_response is None:
            self.on_no_response(branch, TIMEOUT, now)

    def _on_ring_timeout(self, branch: Branch, now: float) -> None:
        branch.timer = None
        if branch is not self.branch or self.state != TRYING:
            return
        self._abandon(branch, now)
        self._record(branch, None, "ring_timeout", None, now)
        self._final(408, now)

    def _on_budget(self, now: float) -> None:
        self.budget_timer = None
        if self.state != TRYING:
            return
        branch = self.branch
        if branch is not None and branch.ringing and not branch.abandoned:
            # The budget is for failing over; a ringing call is up to the callee now (Timer
            # C ends it). Should this branch still fail, _next() will not try another.
            return
        if branch is not None and not branch.abandoned:
            self._abandon(branch, now)
            self._record(branch, None, "budget", None, now)
            self.results.append(None)
        self._give_up(now)

    def _abandon(self, branch: Branch, now: float) -> None:
        """Give up on a branch: stop retransmitting, CANCEL it if it rang, clean up late answers."""
        branch.abandoned = True
        self._stop_branch_timer(branch)
        self.proxy.abandon_branch(self, branch, now)

    # -- the caller -------------------------------------------------------------------
    def cancel(self, now: float) -> None:
        """The caller sent CANCEL: stop failing over, end the branch, answer 487."""
        if self.state != TRYING:
            return
        self.proxy.counters["calls_cancelled"] += 1
        branch = self.branch
        if branch is not None and not branch.abandoned:
            self._abandon(branch, now)
            self._record(branch, None, "cancelled", None, now)
        self._final(487, now)
