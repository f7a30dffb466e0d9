"""The task/round state machine: pure, table-driven, no I/O (design §3).

One machine per role and task: `WorkerMachine`, `ValidatorMachine`, `RequesterMachine`.
The node runtime feeds it events (`events.py`) and executes the actions it returns
(`actions.py`); `phases.py` holds the rules; `persist.py` turns a machine into a dict
and back so a restarted node resumes where it was.
"""

from protocol.state.phases import RoundMachine, RoundView
from protocol.state.records import GlobalModel, Manifest, Phase, Role, TxKind, Update
from protocol.state.requester import Recruiting, RequesterMachine
from protocol.state.validator import ValidatorMachine
from protocol.state.worker import WorkerMachine

__all__ = [
    "GlobalModel",
    "Manifest",
    "Phase",
    "Recruiting",
    "RequesterMachine",
    "Role",
    "RoundMachine",
    "RoundView",
    "TxKind",
    "Update",
    "ValidatorMachine",
    "WorkerMachine",
]
