"""Pure numerics, no I/O: per-token entropy from top-k logprobs, trajectory, statistics.

Nothing in this package imports from the gateway, the monitor or the CLI.
"""

from entropy_sentinel.signal.entropy import TokenSignals, token_signals
from entropy_sentinel.signal.features import FEATURE_NAMES, trajectory_features
from entropy_sentinel.signal.trajectory import Trajectory

__all__ = ["FEATURE_NAMES", "TokenSignals", "Trajectory", "token_signals", "trajectory_features"]
