"""The task/round state machine: pure, table-driven, no I/O.

One machine per role and task: `WorkerMachine`, `ValidatorMachine`, `RequesterMachine`.
`machine.handle(event) -> list[Action]`; `phases.py` holds the rules (a table keyed by
(phase, event type)), the pairs each role ignores and why, the transition table
`TRANSITIONS` (drawn into docs/round.md by `diagram.py`) and the per-phase duties;
`membership.py` how a worker or validator finds and joins a task; `persist.py` turns a
machine into a dict and back.

What the node runtime must do to drive one:

- feed chain logs in chain order, mapped to events: Registry.TaskCreated -> TaskCreated,
  MemberJoined/MemberLeft, TaskStarted (+ members() and the initial model CID),
  RoundStarted -> RoundOpened, PhaseEndedEarly -> PhaseChanged, UpdateSubmitted,
  ManifestCommitted, ManifestRevealed, WorkerSettled... + RoundFinalized -> RoundFinalized
  (with the accepted workers), TaskTerminated;
- validated gossip: ModelAnnouncement -> AnnouncementReceived, KeyRelease ->
  KeyReleaseReceived, UnseatedProof -> UnseatedProofReceived (only once its proof passed
  protocol.sortition.verify_unseated against the round's seed and stakes on chain);
- after the logs of a block, `Tick(block.timestamp)`: the machine's clock is the chain's,
  so "the deadline passed" means the same thing to it as to the contract;
- execute the returned actions in order (`Persist` is always first: write
  `persist.to_dict(machine)` atomically before sending anything); answer each job and
  fetch with its event, each SendTx with TxConfirmed or TxFailed (a machine never resends;
  retry transport errors below it, where the nonce is known), FindTask with TasksOffered,
  SaveFinalModel with FinalModelSaved; FollowTask (follow that task's logs and gossip),
  LoadMembers, Withdraw and Stop carry everything they need, so the runtime never reads
  the machine's view (`progress()` is there for status displays);
- on start-up from a saved dict: `persist.from_dict(data, **options)`, then `Restarted()`,
  which asks again for the jobs and fetches that died with the old process.
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
