"""The adaptive no-response timer of one carrier (RFC 6298's retransmission timeout).

Each first response (100/18x) to an INVITE is a sample of how fast the
carrier answers. The timer is the smoothed mean plus four deviations, never
below a floor (jitter on a fast link must not cause failovers) nor above
``invite_timeout``. Before the first sample it is ``invite_timeout``.
"""

from __future__ import annotations

from dataclasses import dataclass

ALPHA = 1 / 8
BETA = 1 / 4


@dataclass(slots=True)
class ResponseTimer:
    floor: float = 0.3
    cap: float = 2.0
    srtt: float | None = None
    rttvar: float = 0.0
    samples: int = 0

    def sample(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        if self.srtt is None:
            self.srtt = seconds
            self.rttvar = seconds / 2
        else:
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - seconds)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * seconds
        self.samples += 1

    def timeout(self) -> float:
        if self.srtt is None:
            return self.cap
        return min(max(self.srtt + 4 * self.rttvar, self.floor), self.cap)
