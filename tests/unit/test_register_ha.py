"""Registration on an HA pair, without sockets: only the serving node registers.

The HA node pauses a standby's (or a fenced node's) registrations and resumes them the
moment it serves (``HaNode._serve``). These tests drive ``Registrations.pause`` and
``resume`` in the scripted lab of test_register.py: which REGISTERs leave, and when.
"""

from __future__ import annotations

from test_register import REGISTERED, RegLab, answer, registered

from trunkguard.register import STOPPED
from trunkguard.register._client import PAUSED, UNREGISTERED


def test_a_standby_sends_no_register_and_registers_at_once_when_it_serves() -> None:
    lab = RegLab()
    lab.regs.pause(lab.now)  # the HA node does this before the first REGISTER is due
    lab.run(600)
    assert lab.registers == [] and lab.reg.state == UNREGISTERED
    assert not lab.health.admits("a") and lab.health.targets["a"].gate is not None
    assert lab.a_changes() == []  # no timeout, no "registration lost": nothing was tried
    took_over = lab.now
    lab.regs.resume(took_over)
    lab.run(0.5)
    (t1, first), (t2, second) = lab.registers
    assert t1 == t2 == took_over  # the challenge is answered at once too
    assert not first.has("authorization") and second.has("authorization")
    assert lab.reg.state == REGISTERED and lab.health.admits("a")


def test_the_node_that_stops_serving_refreshes_no_more_and_does_not_unregister() -> None:
    lab = RegLab()
    registered(lab, expires=120)
    sent = len(lab.registers)
    assert lab.health.admits("a")
    lab.regs.pause(lab.now)
    assert lab.reg.state == UNREGISTERED and lab.reg.next_at is None
    lab.run(600)  # five times the granted time: no refresh, no Expires: 0
    assert lab.registers[sent:] == []
    # Not a fault of the carrier's: no state change, but it takes no call from here.
    assert lab.a_changes() == [] and not lab.health.admits("a")
    assert lab.health.targets["a"].gate == PAUSED
    events = [(e.state, e.detail) for e in lab.reg_events()]
    assert events[-1] == (UNREGISTERED, "paused: this node is not serving (HA)")
    # Serving again (a fenced node whose key was still its own): at once, then as usual.
    lab.regs.resume(lab.now)
    lab.run(0.5)
    assert len(lab.registers) > sent and lab.registers[sent][0] == lab.now - 0.5
    assert lab.reg.state == REGISTERED and lab.health.admits("a")


def test_resume_forgets_the_backoff_of_earlier_refusals() -> None:
    lab = RegLab()
    lab.registrar.script = [lambda r: answer(r, 403)] * 20
    for _ in range(400):  # refused again and again: the next retry is far off
        if lab.reg.refusals >= 6:
            break
        lab.run(0.5)
    assert lab.reg.refusals == 6 and lab.reg.next_at is not None
    assert lab.reg.next_at - lab.now > 20  # about 32 s
    lab.registrar.script = []
    lab.regs.pause(lab.now)
    lab.regs.resume(lab.now)
    resumed = lab.now
    lab.run(0.5)
    assert [t for t, _ in lab.registers if t >= resumed] == [resumed, resumed]
    assert lab.reg.state == REGISTERED and lab.reg.refusals == 0


def test_resume_on_a_node_never_paused_changes_nothing() -> None:
    lab = RegLab()
    registered(lab, expires=120)
    next_at, sent = lab.reg.next_at, len(lab.registers)
    lab.regs.resume(lab.now)  # active-active: every node serves, nothing is paused
    assert lab.reg.next_at == next_at
    lab.run(1)
    assert len(lab.registers) == sent


def test_a_paused_node_that_stops_sends_nothing() -> None:
    lab = RegLab()
    registered(lab)
    sent = len(lab.registers)
    lab.regs.pause(lab.now)
    assert lab.regs.stop(lab.now) == []  # the binding is the serving node's now
    lab.run(10)
    assert lab.registers[sent:] == [] and lab.reg.state == STOPPED


def test_a_reload_while_paused_sends_nothing_until_resumed() -> None:
    from test_register import register_settings

    lab = RegLab()
    lab.regs.pause(lab.now)
    lab.regs.reconfigure({"a": register_settings(expires=600)}, lab.now)
    lab.run(10)
    assert lab.registers == []
    lab.regs.resume(lab.now)
    lab.run(0.5)
    assert lab.reg.state == REGISTERED and lab.registers[0][1].get("expires") == "600"
