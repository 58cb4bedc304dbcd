"""The same windows offline: the live store's code run over history.

``history`` reads past events (tables, files, a Pulsar topic) as live ingest decodes them;
``replay`` builds a store from them; ``training`` gives each label the window its key had at
its time. ``heimdall backfill`` and ``heimdall export`` (heimdall.cli) use them.
"""

from heimdall.offline.history import HistoryReport, TopicHistory
from heimdall.offline.replay_store import replay
from heimdall.offline.training import TrainingWindows, training_windows

__all__ = ["HistoryReport", "TopicHistory", "TrainingWindows", "replay", "training_windows"]
