"""What the caller saw of one call: the times it measured and how the call ended."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as seen from the caller. Times are event-loop times (``loop.time()``).

    ``final`` is None when no final response came in time: the call hung.
    ``ended`` is when the call was over after an answer: our BYE got its
    final response (``bye_status``), or the callee's BYE arrived
    (``ended_by`` says which side hung up).
    """

    call_id: str
    started: float  # the INVITE went out
    trying: float | None = None  # first 100
    ringing: float | None = None  # first 101-199 (180, 183)
    final: int | None = None
    final_at: float | None = None
    answered_by: str | None = None  # X-Sim-Carrier of the final, else its Contact host:port
    ended: float | None = None
    ended_by: str | None = None  # "caller" or "callee"
    bye_status: int | None = None
    cancelled: float | None = None  # our CANCEL went out
    expected: frozenset[int] = frozenset()  # finals that count as a good outcome
    reason: str = ""
    number: str = ""
    index: int = 0  # order of the call in its run

    @property
    def pdd(self) -> float | None:
        """Post-dial delay: INVITE to the first 18x, or to the final if that came first.

        A 100 Trying says only that the next hop got the INVITE; it ends no
        post-dial delay.
        """
        marks = [t for t in (self.ringing, self.final_at) if t is not None]
        return min(marks) - self.started if marks else None

    @property
    def answered(self) -> bool:
        return self.final is not None and 200 <= self.final < 300

    @property
    def hung(self) -> bool:
        return self.final is None

    @property
    def ok(self) -> bool:
        """Answered and hung up cleanly, or ended with a final this run expects."""
        if self.final is None:
            return False
        if self.answered:
            if self.ended is None:
                return False
            return self.ended_by == "callee" or (
                self.bye_status is not None and 200 <= self.bye_status < 300
            )
        return self.final in self.expected
